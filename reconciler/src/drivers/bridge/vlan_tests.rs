//! The bridge driver's VLAN handling over the fake: ports' VLANs, the bridge's own,
//! sub-interfaces (created marked, kept, deleted, never someone else's), leftovers.

use std::sync::Arc;

use super::fake::{FakeLinks, plain_link};
use super::seam::{DEFAULT_VLAN, LinkRequest, VlanOf};
use super::temporary::temporary_vlan_name;
use super::testkit::{cidr, declared, id, owning};
use super::{BridgeDriver, OWNERSHIP_MARKER};
use crate::contract::{Action, Change, Driver, PlanContext, StepContext};
use crate::model::{Resource, Vlan};

fn vlan(id: u16, pvid: bool, untagged: bool) -> Vlan {
    Vlan { id, pvid, untagged }
}

const TRUNK: &str = "vlanFiltering: true
addresses: [10.0.0.1/24]
ports:
  - name: veth-a
    vlans: [{id: 10, pvid: true, untagged: true}]
  - name: veth-b
    vlans: [{id: 10}, {id: 20, pvid: true, untagged: true}]
  - veth-c
vlanInterfaces:
  - {id: 10, addresses: [10.10.0.1/24]}
  - {id: 20}";

fn host() -> Arc<FakeLinks> {
    Arc::new(FakeLinks::new(vec![
        plain_link(1, "lo", None),
        plain_link(2, "veth-a", Some("veth")),
        plain_link(3, "veth-b", Some("veth")),
        plain_link(4, "veth-c", Some("veth")),
    ]))
}

/// Plans `desired`, applies every change, answers the plan.
async fn converge(
    fake: &Arc<FakeLinks>,
    desired: &[Arc<Resource>],
    context: &PlanContext,
) -> Vec<Change> {
    let driver = BridgeDriver::new(fake.clone());
    let changes = driver.plan(desired, context).await.unwrap();
    for change in &changes {
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap();
    }
    changes
}

async fn plan(fake: &Arc<FakeLinks>, desired: &[Arc<Resource>]) -> Vec<Change> {
    BridgeDriver::new(fake.clone())
        .plan(desired, &owning(&["br0"]))
        .await
        .unwrap()
}

fn summary(changes: &[Change]) -> Vec<(Action, Vec<String>)> {
    changes
        .iter()
        .map(|c| {
            (
                c.action,
                c.fields.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_trunk_bridge_is_created_with_its_port_vlans_and_sub_interfaces_then_is_a_noop() {
    let fake = host();
    let br0 = declared("br0", TRUNK);
    let created = converge(&fake, std::slice::from_ref(&br0), &PlanContext::default()).await;
    assert_eq!(created[0].action, Action::Create);

    let bridge = fake.link("br0").unwrap();
    assert_eq!(
        bridge.vlans,
        vec![DEFAULT_VLAN, vlan(10, false, false), vlan(20, false, false)],
        "the bridge itself carries its sub-interfaces' VLANs, tagged"
    );
    assert_eq!(
        fake.link("veth-a").unwrap().vlans,
        vec![vlan(10, true, true)]
    );
    assert_eq!(
        fake.link("veth-b").unwrap().vlans,
        vec![vlan(10, false, false), vlan(20, true, true)]
    );
    assert_eq!(
        fake.link("veth-c").unwrap().vlans,
        vec![DEFAULT_VLAN],
        "a port without VLANs keeps the kernel's default"
    );
    for (name, id, addresses) in [
        ("br0.10", 10, vec![cidr("10.10.0.1/24")]),
        ("br0.20", 20, vec![]),
    ] {
        let sub = fake.link(name).unwrap();
        assert_eq!(sub.alias.as_deref(), Some(OWNERSHIP_MARKER), "{name}");
        assert_eq!(
            sub.vlan_of,
            Some(VlanOf {
                id,
                parent: bridge.index
            })
        );
        assert!(sub.up, "{name}");
        let mut own: Vec<_> = sub
            .addresses
            .iter()
            .copied()
            .filter(|a| !crate::drivers::net::is_ipv6_link_local(a))
            .collect();
        own.sort();
        assert_eq!(own, addresses, "{name}");
    }

    // The marker goes on under the temporary name, before the declared name is used.
    let requests = fake.requests();
    let temporary = temporary_vlan_name(&id("br0"), 10);
    let create = requests
        .iter()
        .position(
            |r| matches!(r, LinkRequest::CreateVlanLink { name, id: 10, .. } if *name == temporary),
        )
        .expect("br0.10 is created under its temporary name");
    assert!(matches!(
        &requests[create + 1],
        LinkRequest::SetAlias { alias, .. } if alias == OWNERSHIP_MARKER
    ));
    assert!(matches!(
        &requests[create + 2],
        LinkRequest::SetName { name, .. } if name == "br0.10"
    ));

    let again = plan(&fake, &[br0]).await;
    assert_eq!(summary(&again), vec![(Action::NoOp, vec![])]);
}

#[tokio::test]
async fn changed_port_vlans_are_an_update_that_moves_exactly_those() {
    let fake = host();
    converge(&fake, &[declared("br0", TRUNK)], &PlanContext::default()).await;
    let changed = declared(
        "br0",
        &TRUNK.replace(
            "vlans: [{id: 10}, {id: 20, pvid: true, untagged: true}]",
            "vlans: [{id: 10, pvid: true}, {id: 30}]",
        ),
    );
    fake.clear_requests();
    let changes = converge(&fake, std::slice::from_ref(&changed), &owning(&["br0"])).await;
    assert_eq!(
        summary(&changes),
        vec![(Action::Update, vec!["ports.veth-b.vlans".to_owned()])]
    );
    assert_eq!(
        changes[0].fields[0].new,
        serde_json::json!(["10 pvid", "30"])
    );
    let index = fake.link("veth-b").unwrap().index;
    assert_eq!(
        fake.requests(),
        vec![
            LinkRequest::DelBridgeVlan {
                index,
                id: 20,
                bridge_self: false
            },
            LinkRequest::AddBridgeVlan {
                index,
                vlan: vlan(10, true, false),
                bridge_self: false
            },
            LinkRequest::AddBridgeVlan {
                index,
                vlan: vlan(30, false, false),
                bridge_self: false
            },
        ]
    );
    assert_eq!(
        fake.link("veth-b").unwrap().vlans,
        vec![vlan(10, true, false), vlan(30, false, false)]
    );
    assert_eq!(
        summary(&plan(&fake, &[changed]).await),
        vec![(Action::NoOp, vec![])]
    );
}

#[tokio::test]
async fn vlan_drift_by_hand_is_repaired_and_workload_ports_are_left_alone() {
    let fake = host();
    let br0 = declared("br0", TRUNK);
    converge(&fake, std::slice::from_ref(&br0), &PlanContext::default()).await;
    let bridge = fake.link("br0").unwrap().index;
    // A VM's tap another driver enslaved, with VLANs of its own.
    let mut tap = plain_link(40, "tap-vm1", Some("tun"));
    tap.alias = Some("gitvisor:vm/vm1".to_owned());
    tap.master = Some(bridge);
    tap.vlans = vec![vlan(99, true, true)];
    fake.put_link(tap);
    // Someone takes veth-a off VLAN 10 and the bridge off VLAN 20.
    let mut a = fake.link("veth-a").unwrap();
    a.vlans.clear();
    fake.put_link(a);
    let mut br = fake.link("br0").unwrap();
    br.vlans.retain(|v| v.id != 20);
    fake.put_link(br);

    let changes = converge(&fake, std::slice::from_ref(&br0), &owning(&["br0"])).await;
    assert_eq!(
        summary(&changes),
        vec![(
            Action::Update,
            vec!["ports.veth-a.vlans".to_owned(), "vlans".to_owned()]
        )]
    );
    assert_eq!(
        fake.link("veth-a").unwrap().vlans,
        vec![vlan(10, true, true)]
    );
    assert_eq!(
        fake.link("tap-vm1").unwrap().vlans,
        vec![vlan(99, true, true)]
    );
    assert_eq!(
        summary(&plan(&fake, &[br0]).await),
        vec![(Action::NoOp, vec![])]
    );
}

#[tokio::test]
async fn an_undeclared_sub_interface_is_deleted_and_foreign_vlan_links_are_never_touched() {
    let fake = host();
    converge(&fake, &[declared("br0", TRUNK)], &PlanContext::default()).await;
    let bridge = fake.link("br0").unwrap().index;
    // An administrator's own VLAN link on the bridge (no marker).
    let mut theirs = plain_link(50, "br0.30", Some("vlan"));
    theirs.vlan_of = Some(VlanOf {
        id: 30,
        parent: bridge,
    });
    fake.put_link(theirs.clone());

    let fewer = declared("br0", &TRUNK.replace("\n  - {id: 20}", ""));
    let changes = converge(&fake, std::slice::from_ref(&fewer), &owning(&["br0"])).await;
    assert_eq!(
        summary(&changes),
        vec![(
            Action::Update,
            vec!["vlans".to_owned(), "vlanInterfaces".to_owned()]
        )]
    );
    assert!(
        fake.link("br0.20").is_none(),
        "gitvisor's undeclared sub-interface is deleted"
    );
    assert!(fake.link("br0.10").is_some());
    assert_eq!(
        fake.link("br0.30"),
        Some(theirs),
        "someone else's is untouched"
    );
    assert_eq!(
        summary(&plan(&fake, &[fewer]).await),
        vec![(Action::NoOp, vec![])]
    );

    // Declaring the administrator's VLAN as a sub-interface is a conflict, not a takeover.
    let taken = declared("br0", &format!("{TRUNK}\n  - {{id: 30}}"));
    let changes = plan(&fake, &[taken]).await;
    assert_eq!(changes[0].action, Action::Conflict);
    assert!(
        changes[0]
            .reasons
            .iter()
            .any(|r| r.contains("br0.30") && r.contains("gitvisor did not make")),
        "{:?}",
        changes[0].reasons
    );
}

#[tokio::test]
async fn a_leftover_of_an_interrupted_sub_interface_creation_is_removed_first() {
    let fake = host();
    let without = declared("br0", "vlanFiltering: true");
    converge(
        &fake,
        std::slice::from_ref(&without),
        &PlanContext::default(),
    )
    .await;
    let bridge = fake.link("br0").unwrap().index;
    // A crash between create and marker: a vlan link under the temporary name, no alias.
    let temporary = temporary_vlan_name(&id("br0"), 10);
    let mut leftover = plain_link(60, &temporary, Some("vlan"));
    leftover.up = false;
    leftover.vlan_of = Some(VlanOf {
        id: 10,
        parent: bridge,
    });
    fake.put_link(leftover);

    let with = declared("br0", "vlanFiltering: true\nvlanInterfaces: [{id: 10}]");
    fake.clear_requests();
    converge(&fake, std::slice::from_ref(&with), &owning(&["br0"])).await;
    let requests = fake.requests();
    let deleted = requests
        .iter()
        .position(|r| *r == LinkRequest::DeleteLink { index: 60 })
        .expect("the leftover is deleted");
    let created = requests
        .iter()
        .position(|r| matches!(r, LinkRequest::CreateVlanLink { .. }))
        .expect("the sub-interface is created");
    assert!(deleted < created, "{requests:?}");
    assert_eq!(
        fake.link("br0.10").unwrap().alias.as_deref(),
        Some(OWNERSHIP_MARKER)
    );
    assert_eq!(
        summary(&plan(&fake, &[with]).await),
        vec![(Action::NoOp, vec![])]
    );
}

#[tokio::test]
async fn pruning_the_bridge_takes_its_sub_interfaces_with_it() {
    let fake = host();
    converge(&fake, &[declared("br0", TRUNK)], &PlanContext::default()).await;
    let changes = converge(&fake, &[], &owning(&["br0"])).await;
    assert_eq!(changes[0].action, Action::Delete);
    for name in ["br0", "br0.10", "br0.20"] {
        assert!(fake.link(name).is_none(), "{name}");
    }
    assert!(fake.link("veth-a").unwrap().vlans.is_empty());
}
