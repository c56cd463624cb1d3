//! Carrying out one planned bridge change as a sequence of [`LinkRequest`]s.
//!
//! - **Create**: `CreateBridge` under the bridge's temporary name (down, with STP and VLAN
//!   filtering in the create message), `SetAlias` with the ownership marker, `SetName` to
//!   the declared name (see `temporary.rs` for why), then the declared MTU, addresses,
//!   ports (each one that is down brought up right after it is enslaved), and `SetUp`
//!   last. A provable leftover of an earlier, interrupted creation is
//!   deleted first. If the rename fails (the name was taken since the plan), the new
//!   bridge is deleted again before the error is returned; should that fail too, the next
//!   plan removes the leftover.
//! - **Update**: exactly the requests that close the planned [`Drift`], in this order:
//!   marker, bridge options, MTU, address deletions, address additions, port releases,
//!   port enslavements, declared ports that are down brought up, ports' VLANs (off, then on), the bridge's own VLANs, VLAN
//!   sub-interface deletions and address changes, up/down; then new VLAN
//!   sub-interfaces, each like a bridge: created under its temporary name on the bridge
//!   (down), marked, renamed to `<bridge>.<id>`, given its addresses, set up. VLAN
//!   filtering is switched on before any VLAN is set, and ports are enslaved before
//!   theirs are. Addresses are deleted before new ones are added: with
//!   `promote_secondaries` off (the kernel default), deleting a primary IPv4 address also
//!   deletes the secondaries of its subnet, which would take a just-added address with it.
//! - **Delete**: `DeleteLink` by index (the kernel releases the ports), and the same for a
//!   leftover of an interrupted creation.
//!
//! The MTU is set with its own request rather than in the create message: a bridge whose
//! MTU was set at creation still follows its ports' MTU when one is enslaved, while one
//! set through `RTM_SETLINK` keeps the configured value.
//!
//! Ports are checked before anything is sent: a missing port, or one enslaved to a
//! master gitvisor does not manage, fails the apply with nothing half done.
//!
//! Cancellation and the deadline ([`StepContext`]) are checked before every request but
//! two: the marker and the rename that follow a create run with it, so a cancel never
//! leaves a bridge under its temporary name (the next plan would remove it, but would
//! have to). Stopping anywhere else leaves a marked bridge under its declared name that
//! the next plan updates. Each request's description ([`Step::what`]) is the one people
//! read, in errors and in the debug log next to the request itself.

use super::BridgeError;
use super::OWNERSHIP_MARKER;
use super::drift::{AddressDrift, Drift, VlanDrift};
use super::observed::ObservedBridge;
use super::seam::{BridgeOptions, DEFAULT_VLAN, LinkKind, LinkRequest, LinkSeam, LinkState};
use super::temporary::{temporary_name, temporary_vlan_name};
use crate::contract::{Action, Change, StepContext};
use crate::drivers::bridge::BridgeSpec;
use crate::model::ResourceId;

/// One request and how to describe it to people, in terms of the bridge it serves.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    request: LinkRequest,
    what: String,
}

impl Step {
    fn new(request: LinkRequest, what: impl Into<String>) -> Self {
        Step {
            request,
            what: what.into(),
        }
    }
}

/// Carry out `change` on `seam`, stopping between requests when `step` says so.
pub(crate) async fn apply(
    seam: &dyn LinkSeam,
    change: &Change,
    step: &StepContext,
) -> Result<(), BridgeError> {
    let bridge = change.id.name.as_str();
    let host = Host { seam, bridge, step };
    match change.action {
        Action::Create => {
            let (spec, observed) = planned(change)?;
            create(&host, &change.id, spec, observed).await
        }
        Action::Update => {
            let (spec, observed) = planned(change)?;
            update(&host, spec, observed).await
        }
        Action::Delete => delete(&host, observed(change)?).await,
        Action::Replace => Err(invalid(
            bridge,
            "bridges are changed in place; this driver never plans a replace",
        )),
        Action::NoOp | Action::Conflict | Action::Unsupported => Ok(()),
    }
}

/// Where requests go, for which bridge, under which step.
struct Host<'a> {
    seam: &'a dyn LinkSeam,
    bridge: &'a str,
    step: &'a StepContext,
}

impl Host<'_> {
    /// Sends `step` unless the step context says stop.
    async fn send(&self, step: Step) -> Result<Option<u32>, BridgeError> {
        if let Err(cause) = self.step.check() {
            return Err(BridgeError::Interrupted {
                bridge: self.bridge.to_owned(),
                operation: step.what,
                cause,
            });
        }
        self.send_now(step).await
    }

    /// Sends `step` whatever the step context says: for requests that must follow the
    /// one before them.
    async fn send_now(&self, step: Step) -> Result<Option<u32>, BridgeError> {
        send(self.seam, self.bridge, step).await
    }
}

async fn create(
    host: &Host<'_>,
    id: &ResourceId,
    spec: &BridgeSpec,
    observed: &ObservedBridge,
) -> Result<(), BridgeError> {
    let bridge = host.bridge;
    // What the bridge looks like once created, marked and renamed: down, the options from
    // the create message. The MTU is unknown (0) so a declared one is set.
    let mut fresh = LinkState {
        index: 0,
        name: bridge.to_owned(),
        alias: Some(OWNERSHIP_MARKER.to_owned()),
        kind: Some(LinkKind::Bridge),
        mtu: 0,
        up: false,
        master: None,
        bridge: Some(BridgeOptions {
            stp: spec.stp,
            vlan_filtering: spec.vlan_filtering,
        }),
        addresses: Vec::new(),
        vlans: vec![DEFAULT_VLAN],
        vlan_of: None,
    };
    let fresh_view = ObservedBridge {
        declared_ports: observed.declared_ports.clone(),
        ..ObservedBridge::default()
    };
    check_ports(bridge, &Drift::between(spec, &fresh, &fresh_view))?;
    remove_leftover(host, observed).await?;

    let temporary = temporary_name(id);
    let create = Step::new(
        LinkRequest::CreateBridge {
            name: temporary.clone(),
            stp: spec.stp,
            vlan_filtering: spec.vlan_filtering,
        },
        format!("create (as {temporary})"),
    );
    let index = host
        .send(create)
        .await?
        .ok_or_else(|| BridgeError::Request {
            bridge: bridge.to_owned(),
            operation: "create".to_owned(),
            cause: super::NetlinkError::other("the host did not answer the new link's index"),
        })?;
    fresh.index = index;
    let mark = Step::new(
        LinkRequest::SetAlias {
            index,
            alias: OWNERSHIP_MARKER.to_owned(),
        },
        format!("set the ownership marker (ifalias) on {temporary}"),
    );
    host.send_now(mark).await?;
    let rename = Step::new(
        LinkRequest::SetName {
            index,
            name: bridge.to_owned(),
        },
        format!("rename {temporary} to {bridge}"),
    );
    if let Err(error) = host.send_now(rename).await {
        // Best effort: the marked temporary bridge is ours, and the next plan removes it
        // if this fails too.
        let undo = Step::new(
            LinkRequest::DeleteLink { index },
            format!("delete {temporary} after the failed rename"),
        );
        if let Err(undo_error) = host.send_now(undo).await {
            tracing::warn!(bridge, error = %crate::contract::chain(&undo_error), "cannot remove the temporary bridge");
        }
        return Err(error);
    }
    let drift = Drift::between(spec, &fresh, &fresh_view);
    for step in steps(index, &drift) {
        host.send(step).await?;
    }
    create_vlan_interfaces(host, id, index, &drift).await?;
    tracing::info!(bridge, index, "bridge created");
    Ok(())
}

/// Deletes the half-made bridge an interrupted creation left, when the plan found one.
async fn remove_leftover(host: &Host<'_>, observed: &ObservedBridge) -> Result<(), BridgeError> {
    let Some(leftover) = &observed.leftover else {
        return Ok(());
    };
    let step = Step::new(
        LinkRequest::DeleteLink {
            index: leftover.index,
        },
        format!("delete {}, left by an interrupted creation", leftover.name),
    );
    host.send(step).await?;
    tracing::info!(bridge = host.bridge, leftover = %leftover.name, "leftover of an interrupted creation removed");
    Ok(())
}

async fn update(
    host: &Host<'_>,
    spec: &BridgeSpec,
    observed: &ObservedBridge,
) -> Result<(), BridgeError> {
    let bridge = host.bridge;
    let link = observed
        .link
        .as_ref()
        .ok_or_else(|| invalid(bridge, "an update without the observed bridge"))?;
    let drift = Drift::between(spec, link, observed);
    check_ports(bridge, &drift)?;
    remove_leftover(host, observed).await?;
    for step in steps(link.index, &drift) {
        host.send(step).await?;
    }
    let id = super::observed::bridge_id(bridge)
        .ok_or_else(|| invalid(bridge, "the bridge's name is no resource name"))?;
    create_vlan_interfaces(host, &id, link.index, &drift).await?;
    tracing::info!(bridge, index = link.index, "bridge updated");
    Ok(())
}

async fn delete(host: &Host<'_>, observed: &ObservedBridge) -> Result<(), BridgeError> {
    let bridge = host.bridge;
    if observed.link.is_none() && observed.leftover.is_none() {
        return Err(invalid(bridge, "a delete without the observed bridge"));
    }
    remove_leftover(host, observed).await?;
    if let Some(index) = observed.index() {
        host.send(Step::new(LinkRequest::DeleteLink { index }, "delete"))
            .await?;
        tracing::info!(bridge, index, "bridge deleted");
    }
    Ok(())
}

/// Fail before sending anything when a port cannot be enslaved.
fn check_ports(bridge: &str, drift: &Drift) -> Result<(), BridgeError> {
    for port in drift.ports.iter().flat_map(|ports| &ports.enslave) {
        if port.index.is_none() {
            return Err(BridgeError::PortNotFound {
                bridge: bridge.to_owned(),
                port: port.name.clone(),
            });
        }
        if let Some(master) = &port.foreign_master {
            return Err(BridgeError::PortInUse {
                bridge: bridge.to_owned(),
                port: port.name.clone(),
                master: master.clone(),
            });
        }
    }
    Ok(())
}

/// The requests that close `drift` on the bridge with `index`, in order.
fn steps(index: u32, drift: &Drift) -> Vec<Step> {
    let mut steps = Vec::new();
    if drift.marker.is_some() {
        steps.push(Step::new(
            LinkRequest::SetAlias {
                index,
                alias: OWNERSHIP_MARKER.to_owned(),
            },
            "set the ownership marker (ifalias)",
        ));
    }
    let stp = drift.stp.as_ref().map(|d| d.new);
    let vlan_filtering = drift.vlan_filtering.as_ref().map(|d| d.new);
    if stp.is_some() || vlan_filtering.is_some() {
        steps.push(Step::new(
            LinkRequest::SetBridgeOptions {
                index,
                stp,
                vlan_filtering,
            },
            "set stp / vlanFiltering",
        ));
    }
    if let Some(mtu) = &drift.mtu {
        steps.push(Step::new(
            LinkRequest::SetMtu {
                index,
                mtu: mtu.new,
            },
            format!("set mtu {}", mtu.new),
        ));
    }
    if let Some(addresses) = &drift.addresses {
        address_steps(&mut steps, index, "", addresses);
    }
    if let Some(ports) = &drift.ports {
        for port in &ports.release {
            steps.push(Step::new(
                LinkRequest::SetMaster {
                    port_index: port.index,
                    master: None,
                },
                format!("release port {}", port.name),
            ));
        }
        for port in &ports.enslave {
            if let Some(port_index) = port.index {
                steps.push(Step::new(
                    LinkRequest::SetMaster {
                        port_index,
                        master: Some(index),
                    },
                    format!("enslave port {}", port.name),
                ));
            }
        }
    }
    // A port that is down carries nothing: up once it is the bridge's.
    for (port, port_index) in &drift.ports_down {
        steps.push(Step::new(
            LinkRequest::SetUp {
                index: *port_index,
                up: true,
            },
            format!("bring port {port} up"),
        ));
    }
    for port in &drift.port_vlans {
        if let Some(port_index) = port.index {
            vlan_steps(
                &mut steps,
                port_index,
                false,
                &format!("port {}", port.port),
                &port.vlans,
            );
        }
    }
    if let Some(vlans) = &drift.bridge_vlans {
        vlan_steps(&mut steps, index, true, "the bridge itself", vlans);
    }
    if let Some(interfaces) = &drift.vlan_interfaces {
        for sub in &interfaces.delete {
            steps.push(Step::new(
                LinkRequest::DeleteLink { index: sub.index },
                format!("delete VLAN sub-interface {}", sub.name),
            ));
        }
        for (sub, addresses) in &interfaces.addresses {
            address_steps(
                &mut steps,
                sub.index,
                &format!(" on {}", sub.name),
                addresses,
            );
        }
        for sub in &interfaces.down {
            steps.push(Step::new(
                LinkRequest::SetUp {
                    index: sub.index,
                    up: true,
                },
                format!("set {} up", sub.name),
            ));
        }
    }
    if let Some(up) = &drift.up {
        let what = if up.new { "set up" } else { "set down" };
        steps.push(Step::new(LinkRequest::SetUp { index, up: up.new }, what));
    }
    steps
}

/// Take `index` off the VLANs it should not carry, then set the declared ones.
fn vlan_steps(
    steps: &mut Vec<Step>,
    index: u32,
    bridge_self: bool,
    whose: &str,
    drift: &VlanDrift,
) {
    for &id in &drift.remove {
        steps.push(Step::new(
            LinkRequest::DelBridgeVlan {
                index,
                id,
                bridge_self,
            },
            format!("take {whose} off VLAN {id}"),
        ));
    }
    for &vlan in &drift.set {
        steps.push(Step::new(
            LinkRequest::AddBridgeVlan {
                index,
                vlan,
                bridge_self,
            },
            format!("put {whose} on VLAN {vlan}"),
        ));
    }
}

/// Deletions before additions (see the module docs); `on` names the link for people.
fn address_steps(steps: &mut Vec<Step>, index: u32, on: &str, addresses: &AddressDrift) {
    for &cidr in &addresses.remove {
        steps.push(Step::new(
            LinkRequest::DelAddress { index, cidr },
            format!("delete address {cidr}{on}"),
        ));
    }
    for &cidr in &addresses.add {
        steps.push(Step::new(
            LinkRequest::AddAddress { index, cidr },
            format!("add address {cidr}{on}"),
        ));
    }
}

/// Creates the VLAN sub-interfaces `drift` lacks on the bridge `index`: each under its
/// temporary name, marked and renamed together (as a bridge is), then its addresses and
/// up. A provable leftover of an earlier attempt was deleted by the steps before.
async fn create_vlan_interfaces(
    host: &Host<'_>,
    id: &ResourceId,
    index: u32,
    drift: &Drift,
) -> Result<(), BridgeError> {
    let Some(interfaces) = &drift.vlan_interfaces else {
        return Ok(());
    };
    for interface in &interfaces.create {
        let name = interface.link_name(host.bridge);
        let temporary = temporary_vlan_name(id, interface.id);
        let create = Step::new(
            LinkRequest::CreateVlanLink {
                name: temporary.clone(),
                parent: index,
                id: interface.id,
            },
            format!("create VLAN sub-interface {name} (as {temporary})"),
        );
        let sub = host
            .send(create)
            .await?
            .ok_or_else(|| BridgeError::Request {
                bridge: host.bridge.to_owned(),
                operation: format!("create VLAN sub-interface {name}"),
                cause: super::NetlinkError::other("the host did not answer the new link's index"),
            })?;
        host.send_now(Step::new(
            LinkRequest::SetAlias {
                index: sub,
                alias: OWNERSHIP_MARKER.to_owned(),
            },
            format!("set the ownership marker (ifalias) on {temporary}"),
        ))
        .await?;
        host.send_now(Step::new(
            LinkRequest::SetName {
                index: sub,
                name: name.clone(),
            },
            format!("rename {temporary} to {name}"),
        ))
        .await?;
        let mut steps = Vec::new();
        let addresses = AddressDrift {
            old: Vec::new(),
            new: interface.addresses.iter().map(|cidr| cidr.0).collect(),
            remove: Vec::new(),
            add: interface.addresses.iter().map(|cidr| cidr.0).collect(),
        };
        address_steps(&mut steps, sub, &format!(" on {name}"), &addresses);
        steps.push(Step::new(
            LinkRequest::SetUp {
                index: sub,
                up: true,
            },
            format!("set {name} up"),
        ));
        for step in steps {
            host.send(step).await?;
        }
        tracing::info!(bridge = host.bridge, interface = %name, "VLAN sub-interface created");
    }
    Ok(())
}

async fn send(seam: &dyn LinkSeam, bridge: &str, step: Step) -> Result<Option<u32>, BridgeError> {
    tracing::debug!(bridge, what = %step.what, request = ?step.request, "netlink request");
    let asks_vlan_filtering = matches!(
        step.request,
        LinkRequest::CreateBridge {
            vlan_filtering: true,
            ..
        } | LinkRequest::SetBridgeOptions {
            vlan_filtering: Some(true),
            ..
        } | LinkRequest::AddBridgeVlan { .. }
            | LinkRequest::DelBridgeVlan { .. }
    );
    let asks_8021q = matches!(step.request, LinkRequest::CreateVlanLink { .. });
    seam.send(step.request)
        .await
        .map_err(|cause| BridgeError::Request {
            bridge: bridge.to_owned(),
            operation: if asks_vlan_filtering && cause.is_errno(nix::errno::Errno::EOPNOTSUPP) {
                format!(
                    "{} (vlanFiltering: true needs a kernel with bridge VLAN filtering, CONFIG_BRIDGE_VLAN_FILTERING, which this one lacks)",
                    step.what
                )
            } else if asks_8021q && cause.is_errno(nix::errno::Errno::EOPNOTSUPP) {
                format!(
                    "{} (vlanInterfaces need a kernel with 802.1Q VLAN support, CONFIG_VLAN_8021Q, which this one lacks or has not loaded: modprobe 8021q)",
                    step.what
                )
            } else {
                step.what
            },
            cause,
        })
}

/// The declared spec and the planning snapshot a create or update needs.
fn planned(change: &Change) -> Result<(&BridgeSpec, &ObservedBridge), BridgeError> {
    let bridge = change.id.name.as_str();
    let spec = match change
        .desired
        .as_deref()
        .map(|resource| resource.spec.get::<BridgeSpec>())
    {
        Some(Some(spec)) => spec,
        Some(_) => return Err(invalid(bridge, "the declared resource is not a Bridge")),
        None => return Err(invalid(bridge, "the change carries no declared resource")),
    };
    Ok((spec, observed(change)?))
}

fn observed(change: &Change) -> Result<&ObservedBridge, BridgeError> {
    change.observed_as::<ObservedBridge>().ok_or_else(|| {
        invalid(
            change.id.name.as_str(),
            "the change carries no bridge observation; plan it with the bridge driver",
        )
    })
}

fn invalid(bridge: &str, reason: &str) -> BridgeError {
    BridgeError::InvalidChange {
        bridge: bridge.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nix::errno::Errno;

    use super::*;
    use crate::contract::{Driver, DriverError, PlanContext};
    use crate::drivers::bridge::fake::{FakeLinks, bridge_link, plain_link};
    use crate::drivers::bridge::temporary::temporary_name;
    use crate::drivers::bridge::testkit::{adopting, cidr, declared, id, marked, owning};
    use crate::drivers::bridge::{BridgeDriver, LinkRequest::*};
    use crate::model::Resource;

    /// Plan `desired` against `fake`, apply every change, and answer the requests sent.
    async fn converge(
        fake: &Arc<FakeLinks>,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<LinkRequest>, DriverError> {
        let driver = BridgeDriver::new(fake.clone());
        fake.clear_requests();
        for change in driver.plan(desired, context).await? {
            driver
                .apply(&change, &StepContext::detached(change.id.clone()))
                .await?;
        }
        Ok(fake.requests())
    }

    fn bridge_error(error: DriverError) -> BridgeError {
        error
            .downcast::<BridgeError>()
            .unwrap_or_else(|other| panic!("expected a bridge error, got {other}"))
    }

    #[tokio::test]
    async fn create_sends_create_marker_rename_mtu_addresses_ports_then_up() {
        let fake = Arc::new(FakeLinks::new(vec![
            plain_link(1, "lo", None),
            plain_link(2, "eth1", None),
        ]));
        let br0 = declared(
            "br0",
            "mtu: 9000\naddresses: [10.0.0.1/24, fd00::1/64]\nports: [eth1]\nstp: true",
        );
        let sent = converge(&fake, &[br0], &PlanContext::default())
            .await
            .unwrap();
        assert_eq!(
            sent,
            vec![
                CreateBridge {
                    name: temporary_name(&id("br0")),
                    stp: true,
                    vlan_filtering: false
                },
                SetAlias {
                    index: 3,
                    alias: OWNERSHIP_MARKER.into()
                },
                SetName {
                    index: 3,
                    name: "br0".into()
                },
                SetMtu {
                    index: 3,
                    mtu: 9000
                },
                AddAddress {
                    index: 3,
                    cidr: cidr("10.0.0.1/24")
                },
                AddAddress {
                    index: 3,
                    cidr: cidr("fd00::1/64")
                },
                SetMaster {
                    port_index: 2,
                    master: Some(3)
                },
                SetUp { index: 3, up: true },
            ]
        );
    }

    #[tokio::test]
    async fn a_declared_port_that_is_down_is_brought_up_when_enslaved_and_kept_up() {
        let mut eth1 = plain_link(2, "eth1", None);
        eth1.up = false;
        let fake = Arc::new(FakeLinks::new(vec![plain_link(1, "lo", None), eth1]));
        let br0 = declared("br0", "ports: [eth1]");
        let sent = converge(&fake, std::slice::from_ref(&br0), &PlanContext::default())
            .await
            .unwrap();
        let enslave = sent
            .iter()
            .position(|r| {
                *r == SetMaster {
                    port_index: 2,
                    master: Some(3),
                }
            })
            .expect("eth1 is enslaved");
        assert_eq!(
            sent.get(enslave + 1),
            Some(&SetUp { index: 2, up: true }),
            "brought up right after it is enslaved: {sent:?}"
        );
        assert!(fake.link("eth1").unwrap().up);

        // Set down by hand: drift the plan shows, and apply brings it up again.
        let mut down = fake.link("eth1").unwrap();
        down.up = false;
        fake.put_link(down);
        let driver = BridgeDriver::new(fake.clone());
        let changes = driver
            .plan(std::slice::from_ref(&br0), &owning(&["br0"]))
            .await
            .unwrap();
        assert_eq!(changes[0].action, crate::contract::Action::Update);
        let fields: Vec<_> = changes[0]
            .fields
            .iter()
            .map(|f| (f.path.as_str(), f.old.clone(), f.new.clone()))
            .collect();
        assert_eq!(
            fields,
            [("ports.eth1.up", false.into(), true.into())],
            "{changes:?}"
        );
        let sent = converge(&fake, std::slice::from_ref(&br0), &owning(&["br0"]))
            .await
            .unwrap();
        assert_eq!(sent, [SetUp { index: 2, up: true }]);
        let again = driver.plan(&[br0], &owning(&["br0"])).await.unwrap();
        assert_eq!(again[0].action, crate::contract::Action::NoOp, "{again:?}");
    }

    #[tokio::test]
    async fn a_minimal_down_bridge_is_create_marker_and_rename_only() {
        let fake = Arc::new(FakeLinks::new(Vec::new()));
        let sent = converge(
            &fake,
            &[declared("br0", "up: false")],
            &PlanContext::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            sent,
            vec![
                CreateBridge {
                    name: temporary_name(&id("br0")),
                    stp: false,
                    vlan_filtering: false
                },
                SetAlias {
                    index: 1,
                    alias: OWNERSHIP_MARKER.into()
                },
                SetName {
                    index: 1,
                    name: "br0".into()
                },
            ]
        );
    }

    #[tokio::test]
    async fn update_sends_only_the_differing_requests_deleting_addresses_first() {
        let mut br0 = marked(bridge_link(5, "br0"));
        br0.up = true;
        br0.addresses = vec![cidr("10.0.0.1/24"), cidr("fe80::5/64")];
        let mut old_port = plain_link(6, "eth1", None);
        old_port.master = Some(5);
        let new_port = plain_link(7, "eth2", None);
        let fake = Arc::new(FakeLinks::new(vec![br0, old_port, new_port]));
        let desired = declared(
            "br0",
            "mtu: 1400\naddresses: [10.0.0.2/24]\nports: [eth2]\nvlanFiltering: true",
        );
        let sent = converge(&fake, &[desired], &owning(&["br0"]))
            .await
            .unwrap();
        assert_eq!(
            sent,
            vec![
                SetBridgeOptions {
                    index: 5,
                    stp: None,
                    vlan_filtering: Some(true)
                },
                SetMtu {
                    index: 5,
                    mtu: 1400
                },
                DelAddress {
                    index: 5,
                    cidr: cidr("10.0.0.1/24")
                },
                AddAddress {
                    index: 5,
                    cidr: cidr("10.0.0.2/24")
                },
                SetMaster {
                    port_index: 6,
                    master: None
                },
                SetMaster {
                    port_index: 7,
                    master: Some(5)
                },
            ]
        );
    }

    #[tokio::test]
    async fn adopting_sets_the_marker_before_anything_else() {
        let fake = Arc::new(FakeLinks::new(vec![bridge_link(4, "br0")]));
        let sent = converge(
            &fake,
            &[adopting("br0", "addresses: [10.0.0.1/24]")],
            &PlanContext::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            sent,
            vec![
                SetAlias {
                    index: 4,
                    alias: OWNERSHIP_MARKER.into()
                },
                AddAddress {
                    index: 4,
                    cidr: cidr("10.0.0.1/24")
                },
                SetUp { index: 4, up: true },
            ]
        );
    }

    #[tokio::test]
    async fn a_pruned_bridge_is_deleted_by_index() {
        let fake = Arc::new(FakeLinks::new(vec![marked(bridge_link(8, "br-old"))]));
        let sent = converge(&fake, &[], &owning(&["br-old"])).await.unwrap();
        assert_eq!(sent, vec![DeleteLink { index: 8 }]);
        assert!(fake.link("br-old").is_none());
    }

    #[tokio::test]
    async fn a_missing_port_fails_the_apply_naming_the_port_before_anything_is_sent() {
        let fake = Arc::new(FakeLinks::new(Vec::new()));
        let error = converge(
            &fake,
            &[declared("br0", "ports: [eth9]")],
            &PlanContext::default(),
        )
        .await
        .unwrap_err();
        let error = bridge_error(error);
        assert!(matches!(&error, BridgeError::PortNotFound { port, .. } if port == "eth9"));
        assert_eq!(
            error.to_string(),
            "bridge br0: port eth9 does not exist on this host"
        );
        assert!(fake.requests().is_empty());
    }

    #[tokio::test]
    async fn a_port_of_a_foreign_master_is_refused() {
        let mut eth1 = plain_link(2, "eth1", None);
        eth1.master = Some(1);
        let fake = Arc::new(FakeLinks::new(vec![
            plain_link(1, "bond0", Some("bond")),
            eth1,
        ]));
        let error = converge(
            &fake,
            &[declared("br0", "ports: [eth1]")],
            &PlanContext::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            bridge_error(error),
            BridgeError::PortInUse { port, master, .. } if port == "eth1" && master == "bond0"
        ));
        assert!(fake.requests().is_empty());
    }

    #[tokio::test]
    async fn a_kernel_error_names_the_bridge_and_the_operation() {
        let fake = Arc::new(FakeLinks::new(Vec::new()));
        fake.fail_when(|r| matches!(r, AddAddress { .. }), Errno::EINVAL);
        let error = converge(
            &fake,
            &[declared("br0", "addresses: [10.0.0.1/24]")],
            &PlanContext::default(),
        )
        .await
        .unwrap_err();
        let error = bridge_error(error);
        assert!(
            matches!(&error, BridgeError::Request { bridge, operation, cause }
                if bridge == "br0"
                    && operation == "add address 10.0.0.1/24"
                    && cause.errno == Some(Errno::EINVAL as i32)),
            "{error:?}"
        );
        assert!(
            crate::contract::chain(&error).starts_with("bridge br0: add address 10.0.0.1/24: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn replace_is_refused_and_noop_or_conflict_send_nothing() {
        let fake = Arc::new(FakeLinks::new(vec![bridge_link(1, "br0")]));
        let driver = BridgeDriver::new(fake.clone());
        let br0 = declared("br0", "");
        let conflict = driver
            .plan(std::slice::from_ref(&br0), &PlanContext::default())
            .await
            .unwrap()
            .remove(0);
        assert_eq!(conflict.action, Action::Conflict);
        let step = StepContext::detached(conflict.id.clone());
        driver.apply(&conflict, &step).await.unwrap();
        let replace = Change {
            action: Action::Replace,
            ..conflict
        };
        let error = bridge_error(driver.apply(&replace, &step).await.unwrap_err());
        assert!(matches!(error, BridgeError::InvalidChange { .. }));
        assert!(fake.requests().is_empty());
    }

    /// Whatever request of a create fails (a crash there leaves the same host), the next
    /// plan with the store's intent converges to exactly one marked bridge under the
    /// declared name and no temporary link; and no unmarked link ever holds the name.
    #[tokio::test]
    async fn a_create_interrupted_at_any_request_is_repaired_by_the_next_run() {
        let spec = "mtu: 9000\naddresses: [10.0.0.1/24]\nports: [eth1]";
        let requests = {
            let fake = Arc::new(FakeLinks::new(vec![plain_link(1, "eth1", None)]));
            converge(&fake, &[declared("br0", spec)], &PlanContext::default())
                .await
                .unwrap()
        };
        for (failing, target) in requests.iter().enumerate() {
            let fake = Arc::new(FakeLinks::new(vec![plain_link(1, "eth1", None)]));
            let target = target.clone();
            let seen = std::sync::atomic::AtomicBool::new(false);
            fake.fail_when(
                move |request| {
                    *request == target && !seen.swap(true, std::sync::atomic::Ordering::SeqCst)
                },
                Errno::EINTR,
            );
            let br0 = declared("br0", spec);
            let interrupted = converge(&fake, std::slice::from_ref(&br0), &owning(&[])).await;
            assert!(interrupted.is_err(), "request {failing} did not fail");
            if let Some(link) = fake.link("br0") {
                assert_eq!(
                    link.alias.as_deref(),
                    Some(OWNERSHIP_MARKER),
                    "an unmarked bridge holds the declared name after request {failing} failed"
                );
            }

            converge(&fake, std::slice::from_ref(&br0), &owning(&["br0"]))
                .await
                .unwrap_or_else(|e| panic!("repair after request {failing} failed: {e}"));
            let names: Vec<String> = fake.links().into_iter().map(|l| l.name).collect();
            assert_eq!(names, ["eth1", "br0"], "after request {failing} failed");
            let again = BridgeDriver::new(fake.clone())
                .plan(std::slice::from_ref(&br0), &owning(&["br0"]))
                .await
                .unwrap();
            assert_eq!(
                again[0].action,
                Action::NoOp,
                "after request {failing} failed"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_rename_removes_the_temporary_bridge_again() {
        let fake = Arc::new(FakeLinks::new(Vec::new()));
        fake.fail_when(|r| matches!(r, SetName { .. }), Errno::EEXIST);
        let error = converge(&fake, &[declared("br0", "")], &PlanContext::default())
            .await
            .unwrap_err();
        let error = bridge_error(error);
        assert!(
            crate::contract::chain(&error).starts_with(&format!(
                "bridge br0: rename {} to br0: ",
                temporary_name(&id("br0"))
            )),
            "{error}"
        );
        assert_eq!(fake.requests().last(), Some(&DeleteLink { index: 1 }));
        assert!(fake.links().is_empty(), "{:?}", fake.links());
    }

    #[tokio::test]
    async fn an_address_the_kernel_keeps_with_another_prefix_fails_the_apply() {
        let mut br0 = marked(bridge_link(5, "br0"));
        br0.addresses = vec![cidr("fd00::1/64")];
        let fake = Arc::new(FakeLinks::new(vec![br0]));
        let error = converge(
            &fake,
            &[declared(
                "br0",
                "addresses: [fd00::1/64, fd00::1/48]\nup: false",
            )],
            &owning(&["br0"]),
        )
        .await
        .unwrap_err();
        let error = bridge_error(error);
        assert!(
            matches!(&error, BridgeError::Request { operation, cause, .. }
                if operation == "add address fd00::1/48"
                    && cause.errno == Some(Errno::EEXIST as i32)),
            "{error:?}"
        );
    }
}
