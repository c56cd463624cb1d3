//! The VM driver's real host seam against the real kernel and filesystem, without QEMU:
//! taps made through `gitvisor-tap`, marked, renamed and enslaved over netlink; run dirs
//! made whole; and the driver planning and applying a `Stopped` VM (run dir and tap, no
//! process) and pruning it. Each test runs on its own thread in its own network namespace
//! (`tests/common`); without root it says SKIPPED loudly. Booting guests is the
//! e2e suite's job (`e2e/tests/vms.rs`).

mod common;

use common::in_own_netns;
use std::sync::Arc;

use gitvisor::contract::FailureClass;
use gitvisor::drivers::bridge::{LinkRequest, LinkSeam, NetlinkLinks};
use gitvisor::drivers::vm::nic::{tap_alias, tap_name};
use gitvisor::drivers::vm::seam::{Answer, RecordRead, VmHost, VmRequest};
use gitvisor::drivers::vm::{RealHost, VmDriver, VmRoots};
use gitvisor::drivers::{Driver, PlanContext, StepContext};
use gitvisor::model::{Kind, Metadata, Name, Resource, ResourceId, Spec};
use gitvisor::plan::Action;

async fn bridge(links: &NetlinkLinks, name: &str) -> u32 {
    links
        .send(LinkRequest::CreateBridge {
            name: name.into(),
            stp: false,
            vlan_filtering: false,
        })
        .await
        .expect("bridge")
        .expect("its index")
}

#[test]
fn a_tap_is_created_marked_renamed_and_enslaved() {
    in_own_netns("a_tap_is_created_marked_renamed_and_enslaved", || async {
        let links = NetlinkLinks::connect().expect("netlink");
        let br = bridge(&links, "br-t").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let host = RealHost::connect(
            VmRoots::new(dir.path(), &dir.path().join("state")),
            dir.path().join("network"),
        )
        .expect("host");
        let Answer::Index(tap) = host
            .send(VmRequest::CreateTap {
                name: "vt_test_0".into(),
            })
            .await
            .expect("create tap")
        else {
            panic!("no index");
        };
        let again = host
            .send(VmRequest::CreateTap {
                name: "vt_test_0".into(),
            })
            .await
            .expect_err("a tap name is never taken over");
        assert_eq!(again.class, FailureClass::Transient, "{again}");
        for request in [
            LinkRequest::SetAlias {
                index: tap,
                alias: "gitvisor:vm/t/0".into(),
            },
            LinkRequest::SetName {
                index: tap,
                name: "vm_test_0".into(),
            },
            LinkRequest::SetMaster {
                port_index: tap,
                master: Some(br),
            },
            LinkRequest::SetUp {
                index: tap,
                up: true,
            },
        ] {
            host.send(VmRequest::Link(request))
                .await
                .expect("link request");
        }
        assert_eq!(
            host.send(VmRequest::FindLink {
                name: "br-t".into()
            })
            .await
            .unwrap(),
            Answer::Index(br)
        );
        assert_eq!(
            host.send(VmRequest::FindLink {
                name: "nope".into()
            })
            .await
            .unwrap(),
            Answer::Absent
        );
        let snapshot = host.observe().await.expect("observe");
        let link = snapshot
            .links
            .iter()
            .find(|l| l.index == tap)
            .expect("the tap");
        assert_eq!(link.name, "vm_test_0");
        assert_eq!(link.alias.as_deref(), Some("gitvisor:vm/t/0"));
        assert_eq!(link.master, Some(br));
        assert!(link.up);
        assert!(snapshot.run_dirs.is_empty());
    });
}

fn vm(name: &str, spec: &str) -> Arc<Resource> {
    let spec = serde_yaml::from_str(spec).expect("spec parses");
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid")),
        Spec::new::<gitvisor::drivers::vm::VirtualMachineSpec>(spec),
    ))
}

#[test]
fn a_stopped_vm_gets_its_run_dir_and_tap_and_is_pruned_whole() {
    in_own_netns(
        "a_stopped_vm_gets_its_run_dir_and_tap_and_is_pruned_whole",
        || async {
            let links = NetlinkLinks::connect().expect("netlink");
            let br = bridge(&links, "br-s").await;
            let dir = tempfile::tempdir().expect("temp dir");
            let driver = VmDriver::connect(dir.path(), &dir.path().join("state")).expect("driver");
            let declared = vm(
                "quiet",
                "memory: 64MiB\naccel: tcg\nstate: Stopped\nboot: {kernel: /nonexistent}\nnetworks: [{bridge: br-s}]",
            );
            let id = ResourceId::new(Kind::VirtualMachine, Name::parse("quiet").unwrap());
            let owned = PlanContext::new([id.clone()]);
            let plan = driver
                .plan(std::slice::from_ref(&declared), &owned)
                .await
                .expect("plan");
            assert_eq!(plan[0].action, Action::Create);
            driver
                .apply(&plan[0], &StepContext::detached(id.clone()))
                .await
                .expect("apply");
            let record = dir.path().join("vm/quiet/gitvisor.json");
            assert!(record.is_file());
            let host = RealHost::connect(
                VmRoots::new(dir.path(), &dir.path().join("state")),
                dir.path().join("network"),
            )
            .expect("host");
            let snapshot = host.observe().await.expect("observe");
            assert!(matches!(
                snapshot.run_dirs[0].record,
                RecordRead::Present(_)
            ));
            let tap = snapshot
                .links
                .iter()
                .find(|l| l.name == tap_name("quiet", 0))
                .expect("the tap");
            assert_eq!(tap.alias.as_deref(), Some(tap_alias("quiet", 0).as_str()));
            assert_eq!(tap.master, Some(br));
            let again = driver
                .plan(std::slice::from_ref(&declared), &owned)
                .await
                .expect("plan");
            assert_eq!(again[0].action, Action::NoOp, "{:?}", again[0]);

            let prune = driver.plan(&[], &owned).await.expect("plan");
            assert_eq!(prune[0].action, Action::Delete);
            driver
                .apply(&prune[0], &StepContext::detached(id))
                .await
                .expect("prune");
            assert!(!dir.path().join("vm/quiet").exists());
            let after = host.observe().await.expect("observe");
            assert!(after.links.iter().all(|l| l.name != tap_name("quiet", 0)));
        },
    );
}
