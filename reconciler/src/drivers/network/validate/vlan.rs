//! Rules for VLANs: on a Bridge's ports and sub-interfaces ([`check_bridge`]), and on
//! the VM NICs and container networks that join a bridge ([`check_workloads`]).
//!
//! Every VLAN list: ids 1-4094 (0 and 4095 are reserved by 802.1Q), each id once, at
//! most one `pvid` (untagged frames entering a port go to one VLAN). VLANs anywhere need
//! the bridge to filter them (`vlanFiltering: true`); without it the kernel forwards
//! every frame and the VLANs would silently mean nothing. A sub-interface's name
//! `<bridge>.<id>` must fit IFNAMSIZ, and its addresses are interface addresses.

use crate::drivers::container::ContainerSpec;
use crate::drivers::vm::VirtualMachineSpec;
use std::collections::HashMap;

use crate::drivers::bridge::BridgeSpec;
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{IFNAME_MAX, Kind, Name, VLAN_ID_MAX, VLAN_ID_MIN, Vlan};

/// The per-bridge rules; `error(field, message)` reports one finding.
pub(super) fn check_bridge(name: &str, bridge: &BridgeSpec, error: &mut dyn FnMut(&str, String)) {
    let filtering = bridge.vlan_filtering;
    for (i, port) in bridge.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}].vlans");
        if !port.vlans.is_empty() && !filtering {
            error(
                &field,
                format!(
                    "port {} declares VLANs, but bridge {name} does not filter VLANs; set spec.vlanFiltering: true",
                    port.name
                ),
            );
        }
        check_list(&field, &format!("port {}", port.name), &port.vlans, error);
    }
    for (i, interface) in bridge.vlan_interfaces.iter().enumerate() {
        let field = format!("spec.vlanInterfaces[{i}]");
        if !filtering {
            error(
                &field,
                format!(
                    "a VLAN sub-interface needs the bridge to filter VLANs; set spec.vlanFiltering: true on bridge {name}"
                ),
            );
        }
        if let Some(problem) = id_problem(interface.id) {
            error(&format!("{field}.id"), problem);
        }
        if let Some(j) = bridge.vlan_interfaces[..i]
            .iter()
            .position(|other| other.id == interface.id)
        {
            error(
                &format!("{field}.id"),
                format!(
                    "VLAN {} already has a sub-interface (spec.vlanInterfaces[{j}])",
                    interface.id
                ),
            );
        }
        let link = interface.link_name(name);
        if link.len() > IFNAME_MAX {
            error(
                &format!("{field}.id"),
                format!(
                    "the sub-interface's name {link:?} has {} characters, more than an interface name's {IFNAME_MAX}; use a shorter bridge name",
                    link.len()
                ),
            );
        }
        for (k, address) in interface.addresses.iter().enumerate() {
            let at = format!("{field}.addresses[{k}]");
            if let Some(problem) = address.interface_problem() {
                error(&at, format!("cannot be an interface address: {problem}"));
            }
            if let Some(j) = interface.addresses[..k]
                .iter()
                .position(|other| other.addr() == address.addr())
            {
                error(
                    &at,
                    format!(
                        "address {} is already declared ({field}.addresses[{j}])",
                        address.addr()
                    ),
                );
            }
        }
    }
}

/// One VLAN list's own rules: ids in range, each once, one pvid. `owner` names the link
/// in messages ("port eth1", "NIC 0").
pub(super) fn check_list(
    field: &str,
    owner: &str,
    vlans: &[Vlan],
    error: &mut dyn FnMut(&str, String),
) {
    for (j, vlan) in vlans.iter().enumerate() {
        let at = format!("{field}[{j}]");
        if let Some(problem) = id_problem(vlan.id) {
            error(&format!("{at}.id"), problem);
        }
        let earlier = &vlans[..j];
        if let Some(k) = earlier.iter().position(|other| other.id == vlan.id) {
            error(
                &format!("{at}.id"),
                format!(
                    "{owner} declares VLAN {} twice (also {field}[{k}])",
                    vlan.id
                ),
            );
        }
        if vlan.pvid
            && let Some(k) = earlier.iter().position(|other| other.pvid)
        {
            error(
                &format!("{at}.pvid"),
                format!(
                    "{owner} already has VLAN {} as its pvid ({field}[{k}]); untagged frames entering a port go to one VLAN, so at most one may be pvid",
                    earlier[k].id
                ),
            );
        }
    }
}

fn id_problem(id: u16) -> Option<String> {
    (!(VLAN_ID_MIN..=VLAN_ID_MAX).contains(&id)).then(|| {
        format!("VLAN id {id} is out of range {VLAN_ID_MIN}-{VLAN_ID_MAX} (0 and 4095 are reserved by 802.1Q)")
    })
}

/// The VLANs of VM NICs and container networks: their own rules, and the bridge they
/// join (declared for this host) filters VLANs.
pub(super) fn check_workloads(selected: &[&LoadedResource], diagnostics: &mut Vec<Diagnostic>) {
    let bridges: HashMap<&Name, (&LoadedResource, bool)> = selected
        .iter()
        .filter_map(|item| {
            let bridge = item.resource.spec.get::<BridgeSpec>()?;
            Some((&item.resource.metadata.name, (*item, bridge.vlan_filtering)))
        })
        .collect();
    for item in selected {
        if let Some(bridge) = item.resource.spec.get::<BridgeSpec>() {
            let name = item.resource.metadata.name.as_str();
            for (i, interface) in bridge.vlan_interfaces.iter().enumerate() {
                let link = interface.link_name(name);
                let holder = bridges.iter().find(|(other, _)| other.as_str() == link);
                if let Some((_, (other, _))) = holder {
                    diagnostics.push(item.diagnostic(
                        &format!("spec.vlanInterfaces[{i}].id"),
                        format!(
                            "the sub-interface's name {link} is the name of Bridge/{link} (at {}); rename one of them",
                            other.place("metadata.name")
                        ),
                    ));
                }
            }
        }
        let spec = &item.resource.spec;
        let links: Vec<(String, &Name, &[Vlan])> =
            if let Some(vm) = spec.get::<VirtualMachineSpec>() {
                vm.networks
                    .iter()
                    .enumerate()
                    .map(|(i, nic)| {
                        (
                            format!("spec.networks[{i}].vlans"),
                            &nic.bridge,
                            nic.vlans.as_slice(),
                        )
                    })
                    .collect()
            } else if let Some(container) = spec.get::<ContainerSpec>() {
                container
                    .network
                    .iter()
                    .map(|network| {
                        (
                            "spec.network.vlans".to_owned(),
                            &network.bridge,
                            network.vlans.as_slice(),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
        let owner = format!("{}", item.resource.id());
        for (field, bridge, vlans) in links {
            if vlans.is_empty() {
                continue;
            }
            let mut error = |at: &str, message: String| {
                diagnostics.push(item.diagnostic(at, message));
            };
            check_list(&field, &owner, vlans, &mut error);
            // A bridge that is not declared is reported as a dangling reference already.
            if let Some((declared, false)) = bridges.get(bridge) {
                error(
                    &field,
                    format!(
                        "VLANs need bridge {bridge} to filter them, and it does not; set spec.vlanFiltering: true on {} (at {})",
                        crate::model::ResourceId::new(Kind::Bridge, (*bridge).clone()),
                        declared.place("metadata.name")
                    ),
                );
            }
        }
    }
}
