//! What must be unique across the resources that apply to one host, because the host has
//! only one of it: an interface is the port of one bridge; an IP address is on one
//! interface (a link-local one on one interface per link), a bridge's or a container's
//! on it; a port cannot be a bridge that gitvisor manages (the kernel refuses to enslave a bridge
//! to a bridge, "Can not enslave a bridge to a bridge", so this is an error rather than a
//! dependency edge).
//!
//! Each finding is reported at the later declaration (in file order) and names the
//! earlier one's `file:line:col`, so both are in the message.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::drivers::bridge::BridgeSpec;
use crate::drivers::container::ContainerSpec;
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::Kind;

/// A declaration of something unique: the resource and the field it is written at.
struct Claim<'a> {
    item: &'a LoadedResource,
    field: String,
}

impl Claim<'_> {
    fn describe(&self) -> String {
        format!(
            "{} {} at {}",
            self.item.resource.id(),
            self.field,
            self.item.place(&self.field)
        )
    }
}

/// Where an IP address lives: everywhere for a routable one, on one bridge's link for a
/// link-local one (a container's address is on its bridge's link).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Host,
    Link(String),
}

pub(super) fn check_revision(selected: &[&LoadedResource], diagnostics: &mut Vec<Diagnostic>) {
    let bridges: HashMap<&str, &LoadedResource> = selected
        .iter()
        .filter(|item| item.resource.kind() == Kind::Bridge)
        .map(|item| (item.resource.metadata.name.as_str(), *item))
        .collect();
    let mut ports: HashMap<&str, Claim> = HashMap::new();
    let mut addresses: HashMap<(Scope, IpAddr), Claim> = HashMap::new();
    for &item in selected {
        let spec = &item.resource.spec;
        if let Some(bridge) = spec.get::<BridgeSpec>() {
            let name = item.resource.metadata.name.as_str();
            for (i, cidr) in bridge.addresses.iter().enumerate() {
                let scope = if cidr.is_link_local() {
                    Scope::Link(name.to_owned())
                } else {
                    Scope::Host
                };
                let field = format!("spec.addresses[{i}]");
                claim_address(&mut addresses, item, scope, cidr.addr(), field, diagnostics);
            }
            for (i, port) in bridge.ports.iter().enumerate() {
                let field = format!("spec.ports[{i}]");
                if let Some(other) = bridges.get(port.as_str()) {
                    if port.as_str() != name {
                        diagnostics.push(item.diagnostic(
                            &field,
                            format!(
                                "port {port} is Bridge/{port}, declared at {}: the kernel cannot enslave a bridge to a bridge",
                                other.place("metadata.name")
                            ),
                        ));
                    }
                    continue;
                }
                match ports.get(port.as_str()) {
                    Some(first) if std::ptr::eq(first.item, item) => {}
                    Some(first) => diagnostics.push(item.diagnostic(
                        &field,
                        format!(
                            "port {port} is already a port of {}; an interface can be the port of one bridge only",
                            first.describe()
                        ),
                    )),
                    None => {
                        ports.insert(port.as_str(), Claim { item, field });
                    }
                }
            }
        } else if let Some(container) = spec.get::<ContainerSpec>()
            && let Some(network) = &container.network
            && let Some(cidr) = network.address
        {
            let scope = if cidr.is_link_local() {
                Scope::Link(network.bridge.as_str().to_owned())
            } else {
                Scope::Host
            };
            let field = "spec.network.address".to_owned();
            claim_address(&mut addresses, item, scope, cidr.addr(), field, diagnostics);
        }
    }
}

/// Records that `item` declares `ip` in `scope`, or reports the earlier declaration.
fn claim_address<'a>(
    addresses: &mut HashMap<(Scope, IpAddr), Claim<'a>>,
    item: &'a LoadedResource,
    scope: Scope,
    ip: IpAddr,
    field: String,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let key = (scope, ip);
    match addresses.get(&key) {
        // Two prefix lengths of one address on one bridge are the per-resource rule's.
        Some(first) if std::ptr::eq(first.item, item) => {}
        Some(first) => diagnostics.push(item.diagnostic(
            &field,
            format!(
                "address {ip} is already declared by {}; an address can be on one interface only",
                first.describe()
            ),
        )),
        None => {
            addresses.insert(key, Claim { item, field });
        }
    }
}
