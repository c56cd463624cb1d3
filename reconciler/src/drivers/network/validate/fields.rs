//! Rules for a Bridge's network fields (`nat`, `uplink`, `dhcp`, `publish`), and the
//! one that spans resources: a port of the host is published once.
//!
//! Per bridge: NAT and published ports need an IPv4 subnet; an uplink is another
//! interface than the bridge and its ports; a DHCP range and static leases lie inside
//! one of the bridge's IPv4 subnets, off the bridge's own address and the subnet's
//! network and broadcast addresses; static leases have distinct MACs, addresses and
//! names (DNS labels); dnsmasq refuses leases under two minutes. Published ports need
//! `nat: true` and a destination behind the bridge (IPv4 or IPv6), and a `hostAddress` of
//! the destination's family (DNAT keeps the family), never `::1` (nothing leaves the IPv6
//! loopback).
//!
//! Across resources ([`check_publications`]): a Container's or a VM NIC's `publish` needs
//! its bridge to have `nat: true` and the guest a fixed address there (a container's
//! `address`; for a VM, a static lease in the bridge's `dhcp.static` for the NIC's
//! `mac`), each finding saying what to add; then two publications of the same protocol
//! and host port on the same host address (or one of them on every address) are an
//! error at the later one, naming the earlier one's place. Every source of publications
//! goes through [`crate::drivers::network::publish::of_resource`], so the check covers
//! Bridges, Containers and VMs alike.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use crate::drivers::bridge::BridgeSpec;
use crate::drivers::network::publish::{
    Guest, NoTarget, Publication, guest_lists, guest_target, of_resource,
};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{Name, PortPublish, Protocol};

/// dnsmasq's shortest lease.
const MIN_LEASE: Duration = Duration::from_secs(120);
/// The longest lease DHCP can carry: 32-bit seconds, of which 0xffffffff means infinite.
const MAX_LEASE: Duration = Duration::from_secs(u32::MAX as u64 - 1);

/// The per-bridge rules; `error(field, message)` reports one finding.
pub(super) fn check_bridge(name: &str, bridge: &BridgeSpec, error: &mut dyn FnMut(&str, String)) {
    let subnets: Vec<(Ipv4Addr, Ipv4Net)> = bridge
        .addresses
        .iter()
        .filter_map(|cidr| match cidr.0 {
            IpNet::V4(net) => Some((net.addr(), net.trunc())),
            IpNet::V6(_) => None,
        })
        .collect();
    let own = |address: Ipv4Addr| subnets.iter().any(|(a, _)| *a == address);
    let subnet_of = |address: Ipv4Addr| subnets.iter().find(|(_, net)| net.contains(&address));
    let edge = |address: Ipv4Addr, net: &Ipv4Net| {
        net.prefix_len() <= 30 && (address == net.network() || address == net.broadcast())
    };

    if bridge.nat && subnets.is_empty() {
        error(
            "spec.nat",
            "nat masquerades the bridge's IPv4 subnets, and it has no IPv4 address; add one to spec.addresses (e.g. 10.0.0.1/24)".into(),
        );
    }
    if let Some(uplink) = &bridge.uplink {
        if uplink.as_str() == name {
            error("spec.uplink", "a bridge cannot be its own uplink".into());
        } else if bridge.ports.iter().any(|port| port.name == *uplink) {
            error(
                "spec.uplink",
                format!(
                    "{uplink} is a port of this bridge; the uplink is the interface traffic is routed out of, not a port"
                ),
            );
        } else if uplink.as_str() == "lo" {
            error(
                "spec.uplink",
                "the loopback interface cannot be an uplink".into(),
            );
        }
    }

    if let Some(dhcp) = &bridge.dhcp {
        let range = dhcp.range;
        match subnet_of(range.first) {
            None => error(
                "spec.dhcp.range",
                format!(
                    "{range} is in none of the bridge's IPv4 subnets ({}); DHCP serves the bridge's own subnet",
                    list(&subnets)
                ),
            ),
            Some((address, net)) => {
                if !net.contains(&range.last) {
                    error(
                        "spec.dhcp.range",
                        format!(
                            "{range} does not fit in {net}: {} is outside it",
                            range.last
                        ),
                    );
                } else if range.contains(*address) {
                    error(
                        "spec.dhcp.range",
                        format!("{range} contains the bridge's own address {address}"),
                    );
                } else if edge(range.first, net) || edge(range.last, net) {
                    error(
                        "spec.dhcp.range",
                        format!("{range} contains the network or broadcast address of {net}"),
                    );
                }
            }
        }
        if let Some(lease) = dhcp.lease_time {
            if lease.0 < MIN_LEASE {
                error(
                    "spec.dhcp.leaseTime",
                    format!("{lease} is shorter than dnsmasq's shortest lease, 2m"),
                );
            } else if lease.0 > MAX_LEASE {
                error(
                    "spec.dhcp.leaseTime",
                    format!(
                        "{lease} is longer than DHCP can say: a lease time is 32-bit seconds, at most {}s (about 136 years); dnsmasq would wrap it to a few minutes",
                        MAX_LEASE.as_secs()
                    ),
                );
            }
        }
        for (i, lease) in dhcp.static_leases.iter().enumerate() {
            let field = format!("spec.dhcp.static[{i}]");
            match subnet_of(lease.address) {
                None => error(
                    &format!("{field}.address"),
                    format!(
                        "{} is in none of the bridge's IPv4 subnets ({})",
                        lease.address,
                        list(&subnets)
                    ),
                ),
                Some((_, net)) if edge(lease.address, net) => error(
                    &format!("{field}.address"),
                    format!(
                        "{} is the network or broadcast address of {net}",
                        lease.address
                    ),
                ),
                Some(_) if own(lease.address) => error(
                    &format!("{field}.address"),
                    format!("{} is the bridge's own address", lease.address),
                ),
                Some(_) => {}
            }
            let earlier = &dhcp.static_leases[..i];
            if let Some(j) = earlier.iter().position(|l| l.mac == lease.mac) {
                error(
                    &format!("{field}.mac"),
                    format!(
                        "MAC address {} already has a lease (spec.dhcp.static[{j}])",
                        lease.mac
                    ),
                );
            }
            if let Some(j) = earlier.iter().position(|l| l.address == lease.address) {
                error(
                    &format!("{field}.address"),
                    format!(
                        "{} is already leased (spec.dhcp.static[{j}])",
                        lease.address
                    ),
                );
            }
            if let Some(label) = &lease.name {
                if label.as_str().contains('.') {
                    error(
                        &format!("{field}.name"),
                        format!(
                            "{label} is not a host name: one DNS label, without dots (the domain comes from spec.dhcp.domain)"
                        ),
                    );
                }
                if let Some(j) = earlier.iter().position(|l| l.name.as_ref() == Some(label)) {
                    error(
                        &format!("{field}.name"),
                        format!("the name {label} is already given (spec.dhcp.static[{j}])"),
                    );
                }
            }
        }
    }

    for (i, publish) in bridge.publish.iter().enumerate() {
        let field = format!("spec.publish[{i}]");
        if !bridge.nat {
            error(
                &field,
                "published ports need nat: true on the bridge (they are destination NAT to a guest behind it)".into(),
            );
        }
        if publish.host_port == 0 {
            error(
                &format!("{field}.hostPort"),
                "port 0 cannot be published".into(),
            );
        }
        if publish.port == Some(0) {
            error(
                &format!("{field}.port"),
                "port 0 cannot be published".into(),
            );
        }
        match publish.address {
            IpAddr::V4(address) if subnet_of(address).is_none() => error(
                &format!("{field}.address"),
                format!(
                    "{address} is behind none of the bridge's IPv4 subnets ({})",
                    list(&subnets)
                ),
            ),
            IpAddr::V4(address) if own(address) => error(
                &format!("{field}.address"),
                format!("{address} is the bridge's own address; publish a guest's address"),
            ),
            IpAddr::V4(_) => {}
            IpAddr::V6(address) => {
                let nets = ipv6_nets(bridge);
                if bridge
                    .addresses
                    .iter()
                    .any(|cidr| cidr.addr() == IpAddr::V6(address))
                {
                    error(
                        &format!("{field}.address"),
                        format!("{address} is the bridge's own address; publish a guest's address"),
                    );
                } else if !nets.iter().any(|net| net.contains(&IpAddr::V6(address))) {
                    error(
                        &format!("{field}.address"),
                        format!(
                            "{address} is behind none of the bridge's IPv6 subnets ({}); an IPv6 address published goes to a guest behind the bridge",
                            list_nets(&nets)
                        ),
                    );
                }
            }
        }
        check_host_address(
            &field,
            publish.host_address,
            Some(publish.address),
            name,
            bridge,
            error,
        );
    }
}

/// The bridge's IPv6 subnets.
fn ipv6_nets(bridge: &BridgeSpec) -> Vec<IpNet> {
    bridge
        .addresses
        .iter()
        .filter(|cidr| cidr.0.addr().is_ipv6())
        .map(|cidr| cidr.0.trunc())
        .collect()
}

fn list_nets(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        return "it has none".to_owned();
    }
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A publication's `hostAddress` (at `field`), whose port goes to `target` (when known)
/// behind Bridge `name`: DNAT keeps the address family, and nothing leaves the host's
/// IPv6 loopback.
fn check_host_address(
    field: &str,
    host_address: Option<IpAddr>,
    target: Option<IpAddr>,
    name: &str,
    bridge: &BridgeSpec,
    error: &mut dyn FnMut(&str, String),
) {
    let Some(host_address) = host_address else {
        return;
    };
    let field = format!("{field}.hostAddress");
    if host_address == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST) {
        error(
            &field,
            "::1: a port cannot be published on the host's IPv6 loopback (a packet from ::1 never leaves the host's loopback, so it cannot reach a guest); leave hostAddress out to publish on every address, 127.0.0.1 included, or name another IPv6 address of the host".into(),
        );
        return;
    }
    let Some(target) = target else { return };
    match (host_address, target) {
        (IpAddr::V6(_), IpAddr::V4(_)) => {
            let fix = if ipv6_nets(bridge).is_empty() {
                format!(
                    "Bridge/{name} has no IPv6 address, so no guest behind it is reachable over IPv6; publish on an IPv4 address of the host, or add an IPv6 address to Bridge/{name} spec.addresses and publish to a guest's IPv6 address behind it"
                )
            } else {
                "publish on an IPv4 address of the host, or to the guest's IPv6 address".to_owned()
            };
            error(
                &field,
                format!(
                    "{host_address} is an IPv6 address and the port goes to {target}, an IPv4 address: destination NAT cannot change the address family; {fix}"
                ),
            );
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => error(
            &field,
            format!(
                "{host_address} is an IPv4 address and the port goes to {target}, an IPv6 address: destination NAT cannot change the address family; publish on an IPv6 address of the host, or leave hostAddress out (every IPv6 address of the host)"
            ),
        ),
        _ => {}
    }
}

fn list(subnets: &[(Ipv4Addr, Ipv4Net)]) -> String {
    if subnets.is_empty() {
        return "it has none".to_owned();
    }
    subnets
        .iter()
        .map(|(_, net)| net.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Guests' published ports go somewhere, and two publications of one host port are an
/// error naming both.
pub(super) fn check_publications(selected: &[&LoadedResource], diagnostics: &mut Vec<Diagnostic>) {
    let bridges: HashMap<&Name, &BridgeSpec> = selected
        .iter()
        .filter_map(|item| {
            let spec = item.resource.spec.get::<BridgeSpec>()?;
            Some((&item.resource.metadata.name, spec))
        })
        .collect();
    let bridge = |name: &Name| bridges.get(name).copied();
    for &item in selected {
        for list in guest_lists(&item.resource) {
            // A bridge that is not declared is the reference check's finding.
            let Some(spec) = bridge(list.bridge) else {
                continue;
            };
            let mut error = |field: &str, message: String| {
                diagnostics.push(item.diagnostic(field, message));
            };
            check_guest(list.bridge, spec, list.guest, &list.field, &mut error);
            let target = guest_target(list.guest, spec).ok();
            for (i, publish) in list.publish.iter().enumerate() {
                let field = format!("{}[{i}]", list.field);
                check_ports(&field, publish, &mut error);
                check_host_address(
                    &field,
                    publish.host_address,
                    target,
                    list.bridge.as_str(),
                    spec,
                    &mut error,
                );
            }
        }
    }

    let mut claimed: HashMap<(Protocol, u16), Vec<(&LoadedResource, Publication)>> = HashMap::new();
    for &item in selected {
        for publication in of_resource(&item.resource, bridge) {
            let key = (publication.protocol, publication.host_port);
            let earlier = claimed.entry(key).or_default();
            if let Some((first, taken)) = earlier.iter().find(|(_, p)| p.clashes_with(&publication))
            {
                diagnostics.push(item.diagnostic(
                    &format!("{}.hostPort", publication.field),
                    format!(
                        "{} is already published by {} {} at {} ({taken}); a port of the host can be published once",
                        publication.host_side(),
                        taken.declared_by,
                        taken.field,
                        first.place(&format!("{}.hostPort", taken.field)),
                    ),
                ));
                continue;
            }
            earlier.push((item, publication));
        }
    }
}

/// A guest's `publish` list (at `field`) on Bridge `name`: the bridge NATs, and the
/// guest has a fixed IPv4 address behind it.
fn check_guest(
    name: &Name,
    bridge: &BridgeSpec,
    guest: Guest<'_>,
    field: &str,
    error: &mut dyn FnMut(&str, String),
) {
    if !bridge.nat {
        error(
            field,
            format!(
                "published ports need nat: true on Bridge/{name} (they are destination NAT to a guest behind it); add it there"
            ),
        );
    }
    let subnets: Vec<Ipv4Net> = bridge
        .addresses
        .iter()
        .filter_map(|cidr| match cidr.0 {
            IpNet::V4(net) => Some(net.trunc()),
            IpNet::V6(_) => None,
        })
        .collect();
    let example = subnets
        .first()
        .map(|net| format!(" in {net}"))
        .unwrap_or_default();
    let nic = field.strip_suffix(".publish").unwrap_or(field);
    let message = match guest_target(guest, bridge) {
        Ok(IpAddr::V4(address)) => {
            if subnets.iter().any(|net| net.contains(&address)) {
                return;
            }
            let subnets: Vec<(Ipv4Addr, Ipv4Net)> =
                subnets.iter().map(|net| (net.addr(), *net)).collect();
            format!(
                "published ports go to {address}, which is behind none of Bridge/{name}'s IPv4 subnets ({})",
                list(&subnets)
            )
        }
        Ok(IpAddr::V6(address)) => {
            let nets = ipv6_nets(bridge);
            if nets.iter().any(|net| net.contains(&IpAddr::V6(address))) {
                return;
            }
            format!(
                "published ports go to {address}, which is behind none of Bridge/{name}'s IPv6 subnets ({}); add the subnet to Bridge/{name} spec.addresses",
                list_nets(&nets)
            )
        }
        Err(NoTarget::NoAddress) => format!(
            "published ports go to the container's own address, and it declares none; add spec.network.address (an IPv4 address{example} of Bridge/{name})"
        ),
        Err(NoTarget::NoMac) => format!(
            "published ports go to the VM's static DHCP lease on Bridge/{name}, found by this NIC's MAC, and it declares none; add {nic}.mac and a static lease for it to Bridge/{name} spec.dhcp.static"
        ),
        Err(NoTarget::NoDhcp(mac)) => format!(
            "published ports go to the VM's static DHCP lease on Bridge/{name}, and that bridge serves no DHCP; add spec.dhcp to Bridge/{name} with a static lease {{mac: \"{mac}\", address: ...}}{example}"
        ),
        Err(NoTarget::NoStaticLease(mac)) => format!(
            "published ports go to the VM's static DHCP lease on Bridge/{name}, and its spec.dhcp.static has none for {mac}; add {{mac: \"{mac}\", address: ...}} there (an address{example} outside the DHCP range)"
        ),
    };
    error(field, message);
}

/// One guest publication's ports and host address.
fn check_ports(field: &str, publish: &PortPublish, error: &mut dyn FnMut(&str, String)) {
    if publish.host_port == 0 {
        error(
            &format!("{field}.hostPort"),
            "port 0 cannot be published".into(),
        );
    }
    if publish.port == Some(0) {
        error(
            &format!("{field}.port"),
            "port 0 cannot be published".into(),
        );
    }
}
