//! How an existing bridge differs from its declaration, field by field.
//!
//! [`Drift`] is computed once per bridge, from the declared spec and the planning
//! snapshot, and used twice: the diff renders it as [`FieldChange`]s for people, apply
//! turns it into exactly the requests that close each difference. Both sides therefore
//! always agree on what an update does.
//!
//! Rules:
//! - `mtu` is compared only when declared; unset means "the kernel's default, left alone".
//! - `addresses` compare as sets. IPv6 link-local addresses (`fe80::/10`) that the kernel
//!   adds by itself are ignored unless declared.
//! - `ports` compare by interface name; ports found enslaved but not declared are released,
//!   except workload links other gitvisor drivers enslaved (a VM's tap, a container's
//!   veth), recognised by an `ifalias` starting with `gitvisor:`: those are left alone and
//!   not listed.
//! - A declared port that is down carries nothing, so it is drift (`ports.<name>.up`):
//!   apply brings it up right after enslaving it, as systemd-networkd and
//!   NetworkManager do, and brings up one already enslaved that was set down. A port
//!   held by a master gitvisor does not manage is left as it is (apply refuses it).
//! - VLANs count only on a bridge with `vlanFiltering: true`. Each declared port carries
//!   exactly its declared VLANs, or the kernel's default (VLAN 1, pvid, untagged) when it
//!   declares none; a port about to be enslaved is taken to have that default, which the
//!   kernel gives every new port. The bridge itself carries the default plus every VLAN
//!   of a sub-interface (tagged), which the sub-interface needs to see its frames. Ports
//!   that other drivers enslaved are theirs, VLANs included.
//! - `vlanInterfaces`: the `vlan` links on the bridge named `<bridge>.<id>` with the
//!   marker are gitvisor's; they are created (under a temporary name, marked, renamed,
//!   as bridges are), given exactly their addresses, kept up, and deleted when no longer
//!   declared. A `vlan` link under the sub-interface's temporary name with the marker or
//!   no alias is a leftover of an interrupted creation and is deleted. Any other `vlan`
//!   link on the bridge is left alone (`diff.rs` makes one holding a declared name a
//!   conflict).
//! - `nat`, `uplink`, `dhcp` and `publish` are not part of the link's drift: the network
//!   module (`drivers/network/`) computes theirs.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::OWNERSHIP_MARKER;
use super::observed::{DeclaredPort, ObservedBridge, PortLink, bridge_id};
use super::seam::{DEFAULT_VLAN, LinkState};
use super::temporary::temporary_vlan_name;
use crate::contract::{Effect, FieldChange};
use crate::drivers::bridge::BridgeSpec;
use crate::drivers::net::is_ipv6_link_local;
use crate::drivers::vlan_port::declared_or_default;
use crate::model::{Cidr, Vlan, VlanInterface};

/// A field that differs: what it is now and what it will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Differs<T> {
    pub old: T,
    pub new: T,
}

impl<T: PartialEq> Differs<T> {
    fn check(old: T, new: T) -> Option<Self> {
        (old != new).then_some(Differs { old, new })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddressDrift {
    /// Observed addresses that count (sorted), and the declared ones (sorted).
    pub old: Vec<IpNet>,
    pub new: Vec<IpNet>,
    pub remove: Vec<IpNet>,
    pub add: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortDrift {
    /// Port names now (sorted) and declared (sorted).
    pub old: Vec<String>,
    pub new: Vec<String>,
    pub release: Vec<PortLink>,
    pub enslave: Vec<DeclaredPort>,
}

pub(crate) use crate::drivers::vlan_port::VlanDrift;

/// A declared port's VLANs that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortVlanDrift {
    pub port: String,
    /// `None`: the port does not exist (apply fails before sending anything).
    pub index: Option<u32>,
    pub vlans: VlanDrift,
}

/// One of gitvisor's VLAN sub-interfaces as it is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubInterface {
    pub name: String,
    pub index: u32,
}

/// How the bridge's VLAN sub-interfaces differ from `vlanInterfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct VlanInterfaceDrift {
    /// Names of gitvisor's sub-interfaces now and declared (sorted); differ only when
    /// some are created or deleted.
    pub old: Vec<String>,
    pub new: Vec<String>,
    /// Leftovers of interrupted creations, then undeclared sub-interfaces.
    pub delete: Vec<SubInterface>,
    pub create: Vec<VlanInterface>,
    /// Existing ones whose addresses differ.
    pub addresses: Vec<(SubInterface, AddressDrift)>,
    /// Existing ones that are down.
    pub down: Vec<SubInterface>,
}

impl VlanInterfaceDrift {
    /// Nothing to create, delete or change (the names alone are no difference).
    fn is_empty(&self) -> bool {
        self.delete.is_empty()
            && self.create.is_empty()
            && self.addresses.is_empty()
            && self.down.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Drift {
    /// The ownership marker is missing (the old alias, if any, is in `old`).
    pub marker: Option<Differs<Option<String>>>,
    pub mtu: Option<Differs<u32>>,
    pub addresses: Option<AddressDrift>,
    pub ports: Option<PortDrift>,
    pub stp: Option<Differs<bool>>,
    pub vlan_filtering: Option<Differs<bool>>,
    /// Declared ports whose VLANs differ, in declared order.
    pub port_vlans: Vec<PortVlanDrift>,
    /// The bridge's own VLANs.
    pub bridge_vlans: Option<VlanDrift>,
    pub vlan_interfaces: Option<VlanInterfaceDrift>,
    pub up: Option<Differs<bool>>,
    /// Declared ports that exist and are down, in declared order: (name, index).
    pub ports_down: Vec<(String, u32)>,
}

impl Drift {
    /// How `link` (with the ports in `observed`) differs from `spec`.
    pub(crate) fn between(spec: &BridgeSpec, link: &LinkState, observed: &ObservedBridge) -> Self {
        let options = link.bridge.unwrap_or_default();
        Drift {
            marker: Differs::check(link.alias.clone(), Some(OWNERSHIP_MARKER.to_owned())),
            mtu: spec.mtu.and_then(|mtu| Differs::check(link.mtu, mtu)),
            addresses: address_drift(&spec.addresses, link),
            ports: port_drift(observed),
            stp: Differs::check(options.stp, spec.stp),
            vlan_filtering: Differs::check(options.vlan_filtering, spec.vlan_filtering),
            port_vlans: if spec.vlan_filtering {
                port_vlan_drift(observed)
            } else {
                Vec::new()
            },
            bridge_vlans: if spec.vlan_filtering {
                bridge_vlan_drift(spec, link)
            } else {
                None
            },
            vlan_interfaces: vlan_interface_drift(spec, link, observed),
            up: Differs::check(link.up, spec.up),
            ports_down: observed
                .declared_ports
                .iter()
                .filter(|port| port.up == Some(false) && port.foreign_master.is_none())
                .filter_map(|port| port.index.map(|index| (port.name.clone(), index)))
                .collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == Drift::default()
    }

    /// The differences as the plan shows them; every one applies in place.
    pub(crate) fn fields(&self) -> Vec<FieldChange> {
        let mut fields = Vec::new();
        let mut push = |path: &str, old: serde_json::Value, new: serde_json::Value| {
            fields.push(FieldChange::new(path, old, new, Effect::Hot));
        };
        if let Some(marker) = &self.marker {
            push(
                "ifalias",
                marker.old.clone().into(),
                marker.new.clone().into(),
            );
        }
        if let Some(mtu) = &self.mtu {
            push("mtu", mtu.old.into(), mtu.new.into());
        }
        if let Some(addresses) = &self.addresses {
            push("addresses", cidrs(&addresses.old), cidrs(&addresses.new));
        }
        if let Some(ports) = &self.ports {
            push("ports", ports.old.clone().into(), ports.new.clone().into());
        }
        for (port, _) in &self.ports_down {
            push(&format!("ports.{port}.up"), false.into(), true.into());
        }
        if let Some(stp) = &self.stp {
            push("stp", stp.old.into(), stp.new.into());
        }
        if let Some(vlan) = &self.vlan_filtering {
            push("vlanFiltering", vlan.old.into(), vlan.new.into());
        }
        for port in &self.port_vlans {
            push(
                &format!("ports.{}.vlans", port.port),
                vlan_list(&port.vlans.old),
                vlan_list(&port.vlans.new),
            );
        }
        if let Some(vlans) = &self.bridge_vlans {
            push("vlans", vlan_list(&vlans.old), vlan_list(&vlans.new));
        }
        if let Some(interfaces) = &self.vlan_interfaces {
            if interfaces.old != interfaces.new {
                push(
                    "vlanInterfaces",
                    interfaces.old.clone().into(),
                    interfaces.new.clone().into(),
                );
            }
            for (interface, addresses) in &interfaces.addresses {
                push(
                    &format!("vlanInterfaces.{}.addresses", interface.name),
                    cidrs(&addresses.old),
                    cidrs(&addresses.new),
                );
            }
            for interface in &interfaces.down {
                push(
                    &format!("vlanInterfaces.{}.up", interface.name),
                    false.into(),
                    true.into(),
                );
            }
        }
        if let Some(up) = &self.up {
            push("up", up.old.into(), up.new.into());
        }
        fields
    }
}

/// CIDRs as a JSON list of strings, `["10.0.0.1/24"]`.
pub(crate) fn cidrs(list: &[IpNet]) -> serde_json::Value {
    list.iter().map(|cidr| cidr.to_string()).collect()
}

pub(crate) use crate::drivers::vlan_port::vlan_list;

fn address_drift(declared: &[Cidr], link: &LinkState) -> Option<AddressDrift> {
    let new: BTreeSet<IpNet> = declared.iter().map(|cidr| cidr.0).collect();
    let old: BTreeSet<IpNet> = link
        .addresses
        .iter()
        .copied()
        .filter(|cidr| !is_ipv6_link_local(cidr) || new.contains(cidr))
        .collect();
    if old == new {
        return None;
    }
    Some(AddressDrift {
        remove: old.difference(&new).copied().collect(),
        add: new.difference(&old).copied().collect(),
        old: old.into_iter().collect(),
        new: new.into_iter().collect(),
    })
}

fn port_drift(observed: &ObservedBridge) -> Option<PortDrift> {
    let new: BTreeSet<&str> = observed
        .declared_ports
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let counted: Vec<&PortLink> = observed
        .ports
        .iter()
        .filter(|port| !port.workload || new.contains(port.name.as_str()))
        .collect();
    let old: BTreeSet<&str> = counted.iter().map(|p| p.name.as_str()).collect();
    if old == new {
        return None;
    }
    Some(PortDrift {
        release: counted
            .into_iter()
            .filter(|port| !new.contains(port.name.as_str()))
            .cloned()
            .collect(),
        enslave: observed
            .declared_ports
            .iter()
            .filter(|port| !old.contains(port.name.as_str()))
            .cloned()
            .collect(),
        old: old.into_iter().map(str::to_owned).collect(),
        new: new.into_iter().map(str::to_owned).collect(),
    })
}

fn port_vlan_drift(observed: &ObservedBridge) -> Vec<PortVlanDrift> {
    observed
        .declared_ports
        .iter()
        .filter_map(|port| {
            // A port about to be enslaved gets the kernel's default on the way in.
            let now = port.vlans_now.clone().unwrap_or_else(|| vec![DEFAULT_VLAN]);
            VlanDrift::between(now, declared_or_default(&port.vlans)).map(|vlans| PortVlanDrift {
                port: port.name.clone(),
                index: port.index,
                vlans,
            })
        })
        .collect()
}

/// The bridge's own VLANs: the default, and each sub-interface's VLAN tagged.
fn bridge_vlan_drift(spec: &BridgeSpec, link: &LinkState) -> Option<VlanDrift> {
    let mut new = vec![DEFAULT_VLAN];
    for interface in &spec.vlan_interfaces {
        if interface.id == DEFAULT_VLAN.id {
            continue;
        }
        new.push(Vlan {
            id: interface.id,
            pvid: false,
            untagged: false,
        });
    }
    new.sort();
    new.dedup_by_key(|vlan| vlan.id);
    VlanDrift::between(link.vlans.clone(), new)
}

/// What a `vlan` link on the bridge is to gitvisor.
enum VlanLinkRole {
    /// Its sub-interface for this VLAN id (marker, `<bridge>.<id>`).
    Ours(u16),
    /// Half made by an interrupted creation (temporary name, marker or no alias).
    Leftover,
    /// Someone else's: left alone.
    Foreign,
}

fn vlan_link_role(bridge: &LinkState, link: &LinkState) -> VlanLinkRole {
    let Some(vlan) = link.vlan_of else {
        return VlanLinkRole::Foreign;
    };
    let marked = link.alias.as_deref() == Some(OWNERSHIP_MARKER);
    if marked && link.name == format!("{}.{}", bridge.name, vlan.id) {
        return VlanLinkRole::Ours(vlan.id);
    }
    let leftover = bridge_id(&bridge.name)
        .is_some_and(|id| link.name == temporary_vlan_name(&id, vlan.id))
        && (marked || link.alias.is_none());
    if leftover {
        VlanLinkRole::Leftover
    } else {
        VlanLinkRole::Foreign
    }
}

fn vlan_interface_drift(
    spec: &BridgeSpec,
    bridge: &LinkState,
    observed: &ObservedBridge,
) -> Option<VlanInterfaceDrift> {
    let mut drift = VlanInterfaceDrift::default();
    let mut ours: Vec<(u16, &LinkState)> = Vec::new();
    for link in &observed.vlan_links {
        let sub = SubInterface {
            name: link.name.clone(),
            index: link.index,
        };
        match vlan_link_role(bridge, link) {
            VlanLinkRole::Ours(id) => ours.push((id, link)),
            VlanLinkRole::Leftover => drift.delete.push(sub),
            VlanLinkRole::Foreign => {}
        }
    }
    for &(id, link) in &ours {
        let sub = SubInterface {
            name: link.name.clone(),
            index: link.index,
        };
        match spec.vlan_interfaces.iter().find(|i| i.id == id) {
            None => drift.delete.push(sub),
            Some(declared) => {
                if let Some(addresses) = address_drift(&declared.addresses, link) {
                    drift.addresses.push((sub.clone(), addresses));
                }
                if !link.up {
                    drift.down.push(sub);
                }
            }
        }
    }
    for declared in &spec.vlan_interfaces {
        if !ours.iter().any(|(id, _)| *id == declared.id) {
            drift.create.push(declared.clone());
        }
    }
    drift.old = ours.iter().map(|(_, link)| link.name.clone()).collect();
    drift.old.sort();
    drift.new = spec
        .vlan_interfaces
        .iter()
        .map(|i| i.link_name(&bridge.name))
        .collect();
    drift.new.sort();
    (!drift.is_empty()).then_some(drift)
}
