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
//! - `nat`, `uplink`, `dhcp` and `publish` are not part of the link's drift: the network
//!   module (`drivers/network/`) computes theirs.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::OWNERSHIP_MARKER;
use super::observed::{DeclaredPort, ObservedBridge, PortLink};
use super::seam::LinkState;
use crate::contract::{Effect, FieldChange};
use crate::drivers::net::is_ipv6_link_local;
use crate::model::BridgeSpec;

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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Drift {
    /// The ownership marker is missing (the old alias, if any, is in `old`).
    pub marker: Option<Differs<Option<String>>>,
    pub mtu: Option<Differs<u32>>,
    pub addresses: Option<AddressDrift>,
    pub ports: Option<PortDrift>,
    pub stp: Option<Differs<bool>>,
    pub vlan_filtering: Option<Differs<bool>>,
    pub up: Option<Differs<bool>>,
}

impl Drift {
    /// How `link` (with the ports in `observed`) differs from `spec`.
    pub(crate) fn between(spec: &BridgeSpec, link: &LinkState, observed: &ObservedBridge) -> Self {
        let options = link.bridge.unwrap_or_default();
        Drift {
            marker: Differs::check(link.alias.clone(), Some(OWNERSHIP_MARKER.to_owned())),
            mtu: spec.mtu.and_then(|mtu| Differs::check(link.mtu, mtu)),
            addresses: address_drift(spec, link),
            ports: port_drift(observed),
            stp: Differs::check(options.stp, spec.stp),
            vlan_filtering: Differs::check(options.vlan_filtering, spec.vlan_filtering),
            up: Differs::check(link.up, spec.up),
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
        if let Some(stp) = &self.stp {
            push("stp", stp.old.into(), stp.new.into());
        }
        if let Some(vlan) = &self.vlan_filtering {
            push("vlanFiltering", vlan.old.into(), vlan.new.into());
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

fn address_drift(spec: &BridgeSpec, link: &LinkState) -> Option<AddressDrift> {
    let new: BTreeSet<IpNet> = spec.addresses.iter().map(|cidr| cidr.0).collect();
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
