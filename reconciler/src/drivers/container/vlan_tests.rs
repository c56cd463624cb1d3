//! A container network's `vlans` on its host veth end, over the fake host: set at
//! create (with the veth, before `runc start`), drift by hand repaired in place, a
//! changed list applied in place without recreating or restarting the container, and
//! no VLAN request for a bridge that does not filter VLANs.

use crate::model::Spec;
use std::sync::Arc;

use super::fake::FakeHost;
use super::observed::veth_name;
use super::seam::HostRequest;
use super::testkit::{declared, owning};
use super::*;
use crate::contract::{Action, Effect};
use crate::drivers::vlan_port::DEFAULT_VLAN;
use crate::model::{Metadata, Name, Vlan};

fn bridge(filtering: bool) -> Arc<Resource> {
    let spec: crate::drivers::bridge::BridgeSpec =
        serde_yaml::from_str(&format!("vlanFiltering: {filtering}")).expect("test bridge parses");
    Arc::new(Resource::new(
        Metadata::named(Name::parse("br0").expect("valid")),
        Spec::new(spec),
    ))
}

fn web(vlans: &str) -> Arc<Resource> {
    declared(
        "web",
        &format!("image: /images/app\ncommand: [sleep, '1000']\nnetwork: {{bridge: br0{vlans}}}"),
    )
}

fn vlan(id: u16, pvid: bool, untagged: bool) -> Vlan {
    Vlan { id, pvid, untagged }
}

async fn plan(driver: &ContainerDriver, web: &Arc<Resource>, filtering: bool) -> Change {
    let revision = [bridge(filtering), web.clone()];
    let mut changes = driver
        .plan(std::slice::from_ref(web), &owning(&["web"], &revision))
        .await
        .expect("plan");
    assert_eq!(changes.len(), 1, "{changes:?}");
    changes.remove(0)
}

async fn apply(driver: &ContainerDriver, change: &Change) {
    driver
        .apply(change, &StepContext::detached(change.id.clone()))
        .await
        .expect("apply");
}

async fn converge(driver: &ContainerDriver, web: &Arc<Resource>, filtering: bool) {
    let change = plan(driver, web, filtering).await;
    apply(driver, &change).await;
    let again = plan(driver, web, filtering).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}

fn setup() -> (Arc<FakeHost>, ContainerDriver) {
    let fake = Arc::new(FakeHost::new(&["br0"], &[]));
    let driver = ContainerDriver::new(fake.clone());
    (fake, driver)
}

/// Only in-place requests: no stop, delete, create or start.
fn in_place_only(fake: &FakeHost) {
    for request in fake.requests() {
        assert!(
            matches!(request, HostRequest::SetVlans { .. }),
            "not in place: {request}"
        );
    }
}

#[tokio::test]
async fn a_create_connects_the_veth_with_its_vlans() {
    let (fake, driver) = setup();
    let declared = web(", vlans: [{id: 30}, {id: 10, pvid: true, untagged: true}]");
    let change = plan(&driver, &declared, true).await;
    assert_eq!(change.action, Action::Create);
    apply(&driver, &change).await;
    let connect = fake
        .requests()
        .into_iter()
        .find_map(|request| match request {
            HostRequest::Connect { veth, .. } => veth,
            _ => None,
        })
        .expect("a connect with a veth");
    let sorted = vec![vlan(10, true, true), vlan(30, false, false)];
    assert_eq!(connect.vlans, Some(sorted.clone()));
    assert_eq!(fake.veth_vlans(&veth_name("web")), Some(sorted));
    let again = plan(&driver, &declared, true).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}

#[tokio::test]
async fn vlans_changed_by_hand_are_repaired_in_place() {
    let (fake, driver) = setup();
    let declared = web(", vlans: [{id: 10, pvid: true, untagged: true}]");
    converge(&driver, &declared, true).await;
    let veth = veth_name("web");
    fake.set_veth_vlans(&veth, vec![DEFAULT_VLAN, vlan(10, false, false)]);
    fake.clear_requests();

    let change = plan(&driver, &declared, true).await;
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1, "{:?}", change.fields);
    let field = &change.fields[0];
    assert_eq!(
        (field.path.as_str(), field.effect),
        ("network.vlans", Effect::Hot)
    );
    assert_eq!(field.old, serde_json::json!(["1 pvid untagged", "10"]));
    assert_eq!(field.new, serde_json::json!(["10 pvid untagged"]));
    apply(&driver, &change).await;
    in_place_only(&fake);
    assert_eq!(fake.veth_vlans(&veth), Some(vec![vlan(10, true, true)]));
    let again = plan(&driver, &declared, true).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}

#[tokio::test]
async fn a_changed_list_is_applied_in_place_without_recreating() {
    let (fake, driver) = setup();
    converge(&driver, &web(", vlans: [{id: 10}]"), true).await;
    let pid = fake.container("web").and_then(|c| c.pid);
    fake.clear_requests();

    let changed = web(", vlans: [{id: 20, pvid: true, untagged: true}]");
    let change = plan(&driver, &changed, true).await;
    assert_eq!(change.action, Action::Update, "{:?}", change.fields);
    apply(&driver, &change).await;
    in_place_only(&fake);
    assert_eq!(fake.container("web").and_then(|c| c.pid), pid);
    assert_eq!(
        fake.veth_vlans(&veth_name("web")),
        Some(vec![vlan(20, true, true)])
    );
    let again = plan(&driver, &changed, true).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);

    // No list: back to the kernel's default, in place too.
    fake.clear_requests();
    converge(&driver, &web(""), true).await;
    in_place_only(&fake);
    assert_eq!(fake.veth_vlans(&veth_name("web")), Some(vec![DEFAULT_VLAN]));
}

#[tokio::test]
async fn a_bridge_without_filtering_sees_no_vlan_request() {
    let (fake, driver) = setup();
    let declared = web("");
    converge(&driver, &declared, false).await;
    let connect = fake
        .requests()
        .into_iter()
        .find_map(|request| match request {
            HostRequest::Connect { veth, .. } => veth,
            _ => None,
        });
    assert_eq!(connect.expect("a veth").vlans, None);
    fake.set_veth_vlans(&veth_name("web"), vec![vlan(10, true, true)]);
    let again = plan(&driver, &declared, false).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
}
