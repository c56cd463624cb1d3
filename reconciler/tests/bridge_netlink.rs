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

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use gitvisor::drivers::bridge::{
    BridgeDriver, LinkRequest, LinkSeam, LinkState, NetlinkLinks, OWNERSHIP_MARKER,
};
use gitvisor::drivers::{Driver, PlanContext};
use gitvisor::model::{BridgeSpec, Kind, Metadata, Name, Resource, ResourceId, Spec};
use gitvisor::plan::{Action, Change};
use ipnet::IpNet;
use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};

/// Run `body` on a fresh thread inside a fresh network namespace.
fn in_own_netns<F, Fut>(test: &'static str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        if let Err(errno) = unshare(CloneFlags::CLONE_NEWNET) {
            // Straight to the process's stderr: the test harness captures `eprintln!`, and a
            // skip must not pass silently.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: needs root (CAP_SYS_ADMIN) to unshare a network namespace: {errno} ***\n"
            );
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn bridge(name: &str, spec: &str) -> Arc<Resource> {
    let spec: BridgeSpec = serde_yaml::from_str(spec).expect("spec parses");
    let name = Name::parse(name).expect("valid name");
    Arc::new(Resource::new(Metadata::named(name), Spec::Bridge(spec)))
}

fn owning(names: &[&str]) -> PlanContext {
    PlanContext {
        owned: names
            .iter()
            .map(|n| ResourceId::new(Kind::Bridge, Name::parse(n).expect("valid name")))
            .collect(),
    }
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
            .apply(change)
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
