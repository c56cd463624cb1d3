//! A NIC's `vlans` on its tap, over the fake host: set at create right after the tap is
//! enslaved (before it goes up), drift by hand repaired in place, a changed list applied
//! in place without restarting the guest, and nothing VLAN-related on a bridge that does
//! not filter VLANs.

use crate::model::Spec;
use std::sync::Arc;

use super::backend::{Backends, BuiltinBackend, QemuBackend};
use super::fake::{FakeHost, bridge};
use super::nic::tap_name;
use super::seam::VmRequest;
use super::*;
use crate::contract::{Action, Effect};
use crate::drivers::bridge::LinkRequest;
use crate::drivers::vlan_port::DEFAULT_VLAN;
use crate::model::{Kind, Metadata, Name, ResourceId, Vlan};

const VM: &str = "memory: 256MiB\naccel: tcg\nboot: {kernel: /boot/vmlinuz}\n\
                  disks: [{path: /images/web.img}]";

fn resource(name: &str, spec: Spec) -> Arc<Resource> {
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid")),
        spec,
    ))
}

fn vm(networks: &str) -> Arc<Resource> {
    let yaml = format!("{VM}\nnetworks: {networks}");
    resource(
        "web",
        Spec::new::<crate::drivers::vm::VirtualMachineSpec>(
            serde_yaml::from_str(&yaml).expect("test spec parses"),
        ),
    )
}

fn bridge_resource(name: &str, filtering: bool) -> Arc<Resource> {
    let yaml = format!("vlanFiltering: {filtering}");
    resource(
        name,
        Spec::new::<crate::drivers::bridge::BridgeSpec>(
            serde_yaml::from_str(&yaml).expect("test bridge parses"),
        ),
    )
}

fn context(vm: &Arc<Resource>, filtering: bool) -> PlanContext {
    let id = ResourceId::new(Kind::VirtualMachine, Name::parse("web").expect("valid"));
    PlanContext::new([id]).with_revision(&[bridge_resource("br0", filtering), vm.clone()])
}

fn driver(fake: &Arc<FakeHost>) -> VmDriver {
    VmDriver::new(
        fake.clone(),
        super::VmRoots::new(
            std::path::Path::new("/run/gitvisor"),
            std::path::Path::new("/var/lib/gitvisor"),
        ),
        Backends::new(vec![
            Arc::new(QemuBackend::default()),
            Arc::new(BuiltinBackend::with_program(
                "/usr/libexec/gitvisor/gitvisor-vmm",
            )),
        ]),
    )
}

fn vlan(id: u16, pvid: bool, untagged: bool) -> Vlan {
    Vlan { id, pvid, untagged }
}

async fn plan(driver: &VmDriver, vm: &Arc<Resource>, filtering: bool) -> Change {
    let mut changes = driver
        .plan(std::slice::from_ref(vm), &context(vm, filtering))
        .await
        .expect("plan");
    assert_eq!(changes.len(), 1, "{changes:?}");
    changes.remove(0)
}

async fn apply(driver: &VmDriver, change: &Change) {
    driver
        .apply(change, &StepContext::detached(change.id.clone()))
        .await
        .expect("apply");
}

async fn converge(driver: &VmDriver, vm: &Arc<Resource>, filtering: bool) {
    let change = plan(driver, vm, filtering).await;
    apply(driver, &change).await;
    let again = plan(driver, vm, filtering).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}

fn tap_vlans(fake: &FakeHost) -> Vec<Vlan> {
    fake.link(&tap_name("web", 0)).expect("the tap").vlans
}

/// Changes the tap's VLANs behind gitvisor's back.
fn set_tap_vlans(fake: &FakeHost, vlans: Vec<Vlan>) {
    let mut tap = fake.link(&tap_name("web", 0)).expect("the tap");
    fake.remove_link(&tap.name);
    tap.vlans = vlans;
    fake.add_link(tap);
}

fn vlan_requests(fake: &FakeHost) -> Vec<LinkRequest> {
    fake.requests()
        .into_iter()
        .filter_map(|request| match request {
            VmRequest::Link(
                link @ (LinkRequest::AddBridgeVlan { .. } | LinkRequest::DelBridgeVlan { .. }),
            ) => Some(link),
            _ => None,
        })
        .collect()
}

fn restarted(fake: &FakeHost) -> bool {
    fake.requests().iter().any(|request| {
        matches!(
            request,
            VmRequest::Launch { .. } | VmRequest::Control { .. } | VmRequest::Kill { .. }
        )
    })
}

#[tokio::test]
async fn a_create_puts_the_tap_on_its_vlans_between_enslaving_and_up() {
    let fake = Arc::new(FakeHost::new(vec![bridge(1, "br0")]));
    let driver = driver(&fake);
    let web = vm("[{bridge: br0, vlans: [{id: 20}, {id: 10, pvid: true, untagged: true}]}]");
    let change = plan(&driver, &web, true).await;
    assert_eq!(change.action, Action::Create);
    apply(&driver, &change).await;
    let names: Vec<String> = fake.requests().iter().map(ToString::to_string).collect();
    let at = |text: &str| {
        names
            .iter()
            .position(|name| name == text)
            .unwrap_or_else(|| panic!("no {text:?} in {names:?}"))
    };
    let enslave = at("enslave link #2 to bridge #1");
    let off = at("take link #2 off VLAN 1");
    let ten = at("put link #2 on VLAN 10 pvid untagged");
    let twenty = at("put link #2 on VLAN 20");
    let up = at("set link #2 up");
    assert!(
        enslave < off && off < ten && ten < twenty && twenty < up,
        "{names:?}"
    );
    assert_eq!(
        tap_vlans(&fake),
        vec![vlan(10, true, true), vlan(20, false, false)]
    );
    let again = plan(&driver, &web, true).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}

#[tokio::test]
async fn vlans_changed_by_hand_are_repaired_in_place() {
    let fake = Arc::new(FakeHost::new(vec![bridge(1, "br0")]));
    let driver = driver(&fake);
    let web = vm("[{bridge: br0, vlans: [{id: 10, pvid: true, untagged: true}]}]");
    converge(&driver, &web, true).await;
    set_tap_vlans(&fake, vec![DEFAULT_VLAN, vlan(10, false, false)]);
    fake.clear_requests();

    let change = plan(&driver, &web, true).await;
    assert_eq!(change.action, Action::Update);
    let field = change
        .fields
        .iter()
        .find(|field| field.path == "networks[0].vlans")
        .expect("the VLANs show");
    assert_eq!(field.effect, Effect::Hot);
    assert_eq!(field.old, serde_json::json!(["1 pvid untagged", "10"]));
    assert_eq!(field.new, serde_json::json!(["10 pvid untagged"]));
    apply(&driver, &change).await;
    assert_eq!(tap_vlans(&fake), vec![vlan(10, true, true)]);
    assert!(!restarted(&fake), "{:?}", fake.requests());
    let again = plan(&driver, &web, true).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}

#[tokio::test]
async fn a_changed_list_is_applied_in_place_without_restarting_the_guest() {
    let fake = Arc::new(FakeHost::new(vec![bridge(1, "br0")]));
    let driver = driver(&fake);
    converge(&driver, &vm("[{bridge: br0, vlans: [{id: 10}]}]"), true).await;
    assert!(fake.dir("web").and_then(|dir| dir.process).is_some());
    fake.clear_requests();

    let changed = vm("[{bridge: br0, vlans: [{id: 20, pvid: true}, {id: 30}]}]");
    let change = plan(&driver, &changed, true).await;
    assert_eq!(change.action, Action::Update);
    assert!(
        change
            .fields
            .iter()
            .all(|field| field.effect == Effect::Hot),
        "{:?}",
        change.fields
    );
    apply(&driver, &change).await;
    assert!(!restarted(&fake), "{:?}", fake.requests());
    assert_eq!(
        vlan_requests(&fake),
        vec![
            LinkRequest::DelBridgeVlan {
                index: 2,
                id: 10,
                bridge_self: false
            },
            LinkRequest::AddBridgeVlan {
                index: 2,
                vlan: vlan(20, true, false),
                bridge_self: false
            },
            LinkRequest::AddBridgeVlan {
                index: 2,
                vlan: vlan(30, false, false),
                bridge_self: false
            },
        ]
    );
    let again = plan(&driver, &changed, true).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);

    // Dropping the list goes back to the kernel's default, in place too.
    let plain = vm("[{bridge: br0}]");
    converge(&driver, &plain, true).await;
    assert_eq!(tap_vlans(&fake), vec![DEFAULT_VLAN]);
    assert!(!restarted(&fake), "{:?}", fake.requests());
}

#[tokio::test]
async fn a_bridge_without_filtering_sees_no_vlan_request() {
    let fake = Arc::new(FakeHost::new(vec![bridge(1, "br0")]));
    let driver = driver(&fake);
    let web = vm("[{bridge: br0}]");
    converge(&driver, &web, false).await;
    // Whatever the port carries, a bridge that does not filter is not looked at.
    set_tap_vlans(&fake, vec![vlan(10, true, true)]);
    let again = plan(&driver, &web, false).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
    assert!(vlan_requests(&fake).is_empty());
}
