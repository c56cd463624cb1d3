//! The bridge driver against the real kernel, each test in a network namespace of its own.
//!
//! `unshare(CLONE_NEWNET)` moves only the calling thread, so every test runs on a thread of
//! its own, unshares there, and builds a current-thread Tokio runtime on that thread: the
//! netlink socket belongs to the namespace of the thread that opens it. The namespace (and
//! everything created in it) goes away when the thread ends, pass or fail; nothing is
//! created in the host's namespace.
//!
//! Without the privilege to unshare (not root), each test says SKIPPED loudly on stderr.
//!
//! The speed comparison against `ip` lives in `bench/bridges.sh`, not here.

mod common;

use common::in_own_netns;
use std::sync::Arc;

use gitvisor::drivers::bridge::BridgeSpec;
use gitvisor::drivers::bridge::{
    BridgeDriver, LinkRequest, LinkSeam, LinkState, NetlinkLinks, OWNERSHIP_MARKER,
    TEMPORARY_PREFIX,
};
use gitvisor::drivers::{Driver, PlanContext, StepContext};
use gitvisor::model::{Kind, Metadata, Name, Resource, ResourceId, Spec};
use gitvisor::plan::{Action, Change};
use ipnet::IpNet;
use nix::errno::Errno;

fn bridge(name: &str, spec: &str) -> Arc<Resource> {
    let spec: BridgeSpec = serde_yaml::from_str(spec).expect("spec parses");
    let name = Name::parse(name).expect("valid name");
    Arc::new(Resource::new(Metadata::named(name), Spec::new(spec)))
}

fn owning(names: &[&str]) -> PlanContext {
    PlanContext::new(
        names
            .iter()
            .map(|n| ResourceId::new(Kind::Bridge, Name::parse(n).expect("valid name"))),
    )
}

fn cidr(text: &str) -> IpNet {
    text.parse().expect("valid CIDR")
}

async fn link(seam: &NetlinkLinks, name: &str) -> Option<LinkState> {
    seam.dump()
        .await
        .expect("dump")
        .into_iter()
        .find(|l| l.name == name)
}

/// A veth pair made without gitvisor, to serve as a bridge port.
async fn veth_pair(name: &str, peer: &str) {
    let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
    let task = tokio::spawn(connection);
    handle
        .link()
        .add(rtnetlink::LinkVeth::new(name, peer).build())
        .execute()
        .await
        .expect("create veth pair");
    task.abort();
}

async fn plan_and_apply(
    driver: &BridgeDriver,
    desired: &[Arc<Resource>],
    context: &PlanContext,
) -> Vec<Change> {
    let changes = driver.plan(desired, context).await.expect("plan");
    for change in &changes {
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", change.action, change.id));
    }
    changes
}

fn actions(changes: &[Change]) -> Vec<(String, Action)> {
    changes
        .iter()
        .map(|c| (c.id.to_string(), c.action))
        .collect()
}

#[test]
fn driver_creates_updates_in_place_and_prunes_a_real_bridge() {
    in_own_netns(
        "driver_creates_updates_in_place_and_prunes_a_real_bridge",
        || async {
            veth_pair("port0", "peer0").await;
            let driver = BridgeDriver::connect().expect("connect");
            let seam = NetlinkLinks::connect().expect("connect");
            let owned = owning(&["br0"]);

            // Create.
            let v1 = bridge(
                "br0",
                "mtu: 9000\naddresses: [10.0.0.1/24, fd00::1/64]\nports: [port0]\nstp: true",
            );
            let created = plan_and_apply(&driver, std::slice::from_ref(&v1), &owning(&[])).await;
            assert_eq!(actions(&created), [("Bridge/br0".into(), Action::Create)]);
            let br0 = link(&seam, "br0").await.expect("br0 exists");
            let index = br0.index;
            assert!(br0.is_bridge());
            assert_eq!(br0.alias.as_deref(), Some(OWNERSHIP_MARKER));
            assert!(br0.up);
            assert_eq!(
                br0.mtu, 9000,
                "a 1500-byte port must not pull the set MTU down"
            );
            assert!(br0.bridge.expect("bridge options").stp);
            assert!(br0.addresses.contains(&cidr("10.0.0.1/24")));
            assert!(br0.addresses.contains(&cidr("fd00::1/64")));
            assert_eq!(link(&seam, "port0").await.unwrap().master, Some(index));

            // A workload link another driver enslaved (marked `gitvisor:`) is not a port.
            veth_pair("wl0", "wl0-peer").await;
            let wl0 = link(&seam, "wl0").await.unwrap().index;
            for request in [
                LinkRequest::SetAlias {
                    index: wl0,
                    alias: "gitvisor:vm/test".into(),
                },
                LinkRequest::SetMaster {
                    port_index: wl0,
                    master: Some(index),
                },
            ] {
                seam.send(request).await.expect("enslave a workload link");
            }

            // Converged: nothing to do, whatever link-local address the kernel added.
            let again = driver
                .plan(std::slice::from_ref(&v1), &owned)
                .await
                .unwrap();
            assert_eq!(
                actions(&again),
                [("Bridge/br0".into(), Action::NoOp)],
                "{:?}",
                again[0].fields
            );

            // Update in place: same index, new MTU/address/ports/stp.
            let v2 = bridge("br0", "mtu: 1400\naddresses: [10.0.0.2/24]");
            let updated = plan_and_apply(&driver, std::slice::from_ref(&v2), &owned).await;
            assert_eq!(actions(&updated), [("Bridge/br0".into(), Action::Update)]);
            let paths: Vec<&str> = updated[0].fields.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(paths, ["mtu", "addresses", "ports", "stp"]);
            let br0 = link(&seam, "br0").await.unwrap();
            assert_eq!(br0.index, index, "updated in place, not re-created");
            assert_eq!(br0.mtu, 1400);
            assert!(!br0.bridge.unwrap().stp);
            let global: Vec<IpNet> = br0
                .addresses
                .iter()
                .copied()
                .filter(|a| !matches!(a, IpNet::V6(n) if n.addr().is_unicast_link_local()))
                .collect();
            assert_eq!(global, [cidr("10.0.0.2/24")]);
            assert_eq!(link(&seam, "port0").await.unwrap().master, None);
            assert_eq!(
                link(&seam, "wl0").await.unwrap().master,
                Some(index),
                "workload links stay"
            );
            let again = driver
                .plan(std::slice::from_ref(&v2), &owned)
                .await
                .unwrap();
            assert_eq!(actions(&again), [("Bridge/br0".into(), Action::NoOp)]);

            // Without the store record a marked bridge stays; with it, it is pruned.
            assert!(driver.plan(&[], &owning(&[])).await.unwrap().is_empty());
            let pruned = plan_and_apply(&driver, &[], &owned).await;
            assert_eq!(actions(&pruned), [("Bridge/br0".into(), Action::Delete)]);
            assert!(link(&seam, "br0").await.is_none());
            assert!(link(&seam, "port0").await.is_some(), "ports survive");
        },
    );
}

#[test]
fn links_gitvisor_did_not_create_are_conflicts_until_adopted() {
    in_own_netns(
        "links_gitvisor_did_not_create_are_conflicts_until_adopted",
        || async {
            veth_pair("br-veth", "br-veth-peer").await;
            let seam = NetlinkLinks::connect().expect("connect");
            seam.send(LinkRequest::CreateBridge {
                name: "br-foreign".into(),
                stp: false,
                vlan_filtering: false,
            })
            .await
            .expect("create an unmarked bridge");
            let driver = BridgeDriver::connect().expect("connect");
            let desired = [bridge("br-veth", ""), bridge("br-foreign", "")];
            let changes = driver.plan(&desired, &owning(&[])).await.unwrap();
            assert_eq!(
                actions(&changes),
                [
                    ("Bridge/br-veth".into(), Action::Conflict),
                    ("Bridge/br-foreign".into(), Action::Conflict),
                ]
            );

            let mut adopted = (*desired[1]).clone();
            adopted
                .metadata
                .annotations
                .insert("gitvisor.dev/adopt".into(), "true".into());
            let changes = plan_and_apply(&driver, &[Arc::new(adopted)], &owning(&[])).await;
            assert_eq!(
                actions(&changes),
                [("Bridge/br-foreign".into(), Action::Update)]
            );
            let foreign = link(&seam, "br-foreign").await.unwrap();
            assert_eq!(foreign.alias.as_deref(), Some(OWNERSHIP_MARKER));
            assert!(foreign.up);
        },
    );
}

#[test]
fn seam_requests_are_idempotent_except_creating_a_taken_name() {
    in_own_netns(
        "seam_requests_are_idempotent_except_creating_a_taken_name",
        || async {
            let seam = NetlinkLinks::connect().expect("connect");
            let create = LinkRequest::CreateBridge {
                name: "br-idem".into(),
                stp: false,
                vlan_filtering: false,
            };
            let index = seam.send(create.clone()).await.unwrap().expect("an index");
            let error = seam.send(create).await.unwrap_err();
            assert_eq!(error.errno, Some(Errno::EEXIST as i32), "{error}");

            for cidr in [cidr("10.9.0.1/24"), cidr("fd09::1/64")] {
                let add = LinkRequest::AddAddress { index, cidr };
                seam.send(add.clone()).await.expect("add");
                seam.send(add).await.expect("adding again is a no-op");
                let del = LinkRequest::DelAddress { index, cidr };
                seam.send(del.clone()).await.expect("delete");
                seam.send(del).await.expect("deleting again is a no-op");
            }
            seam.send(LinkRequest::SetAlias {
                index,
                alias: OWNERSHIP_MARKER.into(),
            })
            .await
            .unwrap();
            assert_eq!(
                link(&seam, "br-idem").await.unwrap().alias.as_deref(),
                Some(OWNERSHIP_MARKER)
            );
            seam.send(LinkRequest::DeleteLink { index }).await.unwrap();
            seam.send(LinkRequest::DeleteLink { index })
                .await
                .expect("deleting a deleted link is a no-op");
            let error = seam
                .send(LinkRequest::SetMtu { index, mtu: 1400 })
                .await
                .unwrap_err();
            assert_eq!(error.errno, Some(Errno::ENODEV as i32), "{error}");
        },
    );
}

/// Why bridges are created under a temporary name and renamed (see the driver's
/// `temporary.rs`): the kernel drops `IFLA_IFALIAS` from a creating `RTM_NEWLINK`. Should a
/// kernel ever keep it, this fails, and the marker could ride on the create instead.
#[test]
fn the_kernel_ignores_an_alias_in_the_create_request() {
    in_own_netns(
        "the_kernel_ignores_an_alias_in_the_create_request",
        || async {
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            let task = tokio::spawn(connection);
            handle
                .link()
                .add(
                    rtnetlink::LinkMessageBuilder::<rtnetlink::LinkBridge>::new("br-alias")
                        .alias(OWNERSHIP_MARKER.to_owned())
                        .build(),
                )
                .execute()
                .await
                .expect("create a bridge with an alias in the request");
            task.abort();
            let seam = NetlinkLinks::connect().expect("connect");
            let created = link(&seam, "br-alias").await.expect("created");
            assert_eq!(created.alias, None, "{created:?}");
        },
    );
}

/// The reproduction of the ownership defect, against the kernel: gitvisor makes br-x, an
/// administrator deletes it and makes another br-x by hand. The store still records br-x;
/// the new bridge is a conflict when declared and is not pruned when not.
#[test]
fn a_bridge_made_again_by_hand_is_neither_taken_over_nor_pruned() {
    in_own_netns(
        "a_bridge_made_again_by_hand_is_neither_taken_over_nor_pruned",
        || async {
            let driver = BridgeDriver::connect().expect("connect");
            let seam = NetlinkLinks::connect().expect("connect");
            let br_x = bridge("br-x", "addresses: [10.7.0.1/24]");
            plan_and_apply(&driver, std::slice::from_ref(&br_x), &owning(&[])).await;
            let ours = link(&seam, "br-x").await.expect("br-x created");
            assert_eq!(ours.alias.as_deref(), Some(OWNERSHIP_MARKER));

            seam.send(LinkRequest::DeleteLink { index: ours.index })
                .await
                .expect("delete by hand");
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            let task = tokio::spawn(connection);
            handle
                .link()
                .add(rtnetlink::LinkBridge::new("br-x").build())
                .execute()
                .await
                .expect("make br-x by hand");
            task.abort();
            let theirs = link(&seam, "br-x").await.expect("br-x by hand");

            let store = owning(&["br-x"]);
            let declared = driver
                .plan(std::slice::from_ref(&br_x), &store)
                .await
                .unwrap();
            assert_eq!(
                actions(&declared),
                [("Bridge/br-x".into(), Action::Conflict)]
            );
            driver
                .apply(&declared[0], &StepContext::detached(declared[0].id.clone()))
                .await
                .expect("a conflict sends nothing");
            let pruned = driver.plan(&[], &store).await.unwrap();
            assert!(pruned.is_empty(), "{:?}", actions(&pruned));
            assert_eq!(link(&seam, "br-x").await, Some(theirs), "br-x was touched");
        },
    );
}

/// `EEXIST` is success only when the host has exactly the requested address: the kernel
/// also answers it to an IPv6 address the link has with another prefix length, and keeps
/// the old one.
#[test]
fn adding_an_address_the_link_has_with_another_prefix_length_is_an_error() {
    in_own_netns(
        "adding_an_address_the_link_has_with_another_prefix_length_is_an_error",
        || async {
            let seam = NetlinkLinks::connect().expect("connect");
            let index = seam
                .send(LinkRequest::CreateBridge {
                    name: "br-pfx".into(),
                    stp: false,
                    vlan_filtering: false,
                })
                .await
                .unwrap()
                .expect("an index");
            let add = |cidr: &str| LinkRequest::AddAddress {
                index,
                cidr: self::cidr(cidr),
            };
            seam.send(add("fd00::1/64")).await.expect("add");
            seam.send(add("fd00::1/64"))
                .await
                .expect("adding again is a no-op");
            let error = seam.send(add("fd00::1/48")).await.unwrap_err();
            assert_eq!(error.errno, Some(Errno::EEXIST as i32), "{error}");
            assert!(error.message.contains("fd00::1/64"), "{error}");
            let addresses = link(&seam, "br-pfx").await.unwrap().addresses;
            assert!(!addresses.contains(&cidr("fd00::1/48")), "{addresses:?}");
        },
    );
}

/// A bridge is created under its temporary name, marked and renamed: the kernel never
/// announces the declared name without the marker, and no temporary link stays.
#[test]
fn a_created_bridge_never_holds_its_name_unmarked() {
    use futures::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};

    in_own_netns("a_created_bridge_never_holds_its_name_unmarked", || async {
        let (connection, _handle, mut events) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
                .expect("subscribe to link events");
        let task = tokio::spawn(connection);
        let driver = BridgeDriver::connect().expect("connect");
        plan_and_apply(
            &driver,
            &[bridge("br-new", "addresses: [10.8.0.1/24]")],
            &owning(&[]),
        )
        .await;

        // Every announcement of br-new, up to the last step of the create (set up).
        let watch = async {
            let mut announced = Vec::new();
            while let Some((message, _)) = events.next().await {
                let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) =
                    message.payload
                else {
                    continue;
                };
                let attribute = |pick: fn(&LinkAttribute) -> Option<String>| {
                    link.attributes.iter().find_map(pick)
                };
                let name = attribute(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                });
                if name.as_deref() != Some("br-new") {
                    continue;
                }
                let alias = attribute(|a| match a {
                    LinkAttribute::IfAlias(alias) => Some(alias.clone()),
                    _ => None,
                });
                let up = link.header.flags.contains(LinkFlags::Up);
                announced.push(alias);
                if up {
                    break;
                }
            }
            announced
        };
        let announced = tokio::time::timeout(std::time::Duration::from_secs(60), watch)
            .await
            .expect("the kernel never announced br-new up");
        task.abort();
        assert!(!announced.is_empty());
        assert!(
            announced
                .iter()
                .all(|alias| alias.as_deref() == Some(OWNERSHIP_MARKER)),
            "br-new was announced without the marker: {announced:?}"
        );
        let seam = NetlinkLinks::connect().expect("connect");
        let names: Vec<String> = seam
            .dump()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(TEMPORARY_PREFIX)),
            "{names:?}"
        );
    });
}
