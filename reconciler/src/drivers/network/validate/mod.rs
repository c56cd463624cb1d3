//! A Bridge's validation, reached through its registration: the rules of one Bridge on
//! its own ([`check`]: IFNAMSIZ, reserved names, addresses the kernel refuses or merges,
//! ports, MTU, then its network fields and VLANs), and the rules across the revision that
//! are about what lives on a bridge's link ([`check_revision`]: one port per bridge, one
//! address per interface, each host port published once, workloads' VLANs on a bridge
//! that filters them).
//!
//! The engine (`crate::validate`) runs these for every Bridge, and the revision hook once
//! per revision; it knows nothing of what they check.

mod fields;
mod unique;
mod vlan;

use crate::drivers::bridge::BridgeSpec;
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{IFNAME_MAX, RESERVED_IFNAMES};

/// The rules of one Bridge on its own; every finding goes to `diagnostics`.
pub(crate) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let resource = &item.resource;
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    let Some(bridge) = resource.spec.get::<BridgeSpec>() else {
        return;
    };
    let name = resource.metadata.name.as_str();
    if name.len() > IFNAME_MAX {
        error(
            "metadata.name",
            format!(
                "a Bridge name is an interface name: at most {IFNAME_MAX} characters, {name:?} has {}",
                name.len()
            ),
        );
    }
    if RESERVED_IFNAMES.contains(&name) {
        error(
            "metadata.name",
            format!(
                "a Bridge name is an interface name, and the kernel reserves {name:?} (/proc/sys/net/*/conf/{name})"
            ),
        );
    }
    for (i, address) in bridge.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        if let Some(problem) = address.interface_problem() {
            error(&field, format!("cannot be a bridge address: {problem}"));
        }
        if let Some(j) = bridge.addresses[..i]
            .iter()
            .position(|a| a.addr() == address.addr())
        {
            let first = &bridge.addresses[j];
            let message = if first == address {
                format!("duplicate address {address} (also spec.addresses[{j}])")
            } else {
                format!(
                    "address {} is already declared as {first} (spec.addresses[{j}]); an address has one prefix length, and the kernel would keep only one of them",
                    address.addr()
                )
            };
            error(&field, message);
        }
    }
    for (i, port) in bridge.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        if bridge.ports[..i].contains(port) {
            error(&field, format!("duplicate port {port}"));
        }
        if port.as_str() == name {
            error(&field, "a bridge cannot be its own port".into());
        }
        if port.as_str() == "lo" {
            error(
                &field,
                "the loopback interface `lo` cannot be a bridge port (the kernel refuses it)"
                    .into(),
            );
        }
    }
    if let Some(mtu) = bridge.mtu
        && !(68..=65535).contains(&mtu)
    {
        error("spec.mtu", format!("MTU {mtu} out of range 68-65535"));
    }
    fields::check_bridge(name, bridge, &mut error);
    vlan::check_bridge(name, bridge, &mut error);
}

/// The rules across the resources `selected` for this host that are about a bridge's
/// link: ports and addresses are unique, a host port is published once and reaches its
/// guest, and VLANs of VM NICs and container networks need their bridge to filter them.
pub(crate) fn check_revision(selected: &[&LoadedResource], diagnostics: &mut Vec<Diagnostic>) {
    unique::check_revision(selected, diagnostics);
    fields::check_publications(selected, diagnostics);
    vlan::check_workloads(selected, diagnostics);
}
