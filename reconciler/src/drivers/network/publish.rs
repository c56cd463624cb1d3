//! [`Publication`]: one published port, as a plain value whoever declared it.
//!
//! A port is published by a Bridge (`spec.publish`, naming the address behind it), by a
//! Container's network (`spec.network.publish`, to the container's declared static
//! address) and by a VM's NIC (`spec.networks[].publish`, to the static DHCP lease the
//! bridge declares for the NIC's MAC). Every source turns into the same value, so the
//! nftables rules, the plan and validation's uniqueness check treat them alike: the rules
//! always live with the bridge the destination is behind, whoever declared them.
//! [`of_resource`] is the one place a source is read; [`guest_target`] is how a guest's
//! address is found, and why it cannot be (validation turns that into the fix to make).

use crate::drivers::container::ContainerSpec;
use crate::drivers::vm::VirtualMachineSpec;
use std::fmt;
use std::net::IpAddr;

use crate::contract::PlanContext;
use crate::drivers::bridge::BridgeSpec;
use crate::model::{
    BridgePublish, Cidr, Kind, MacAddress, Name, PortPublish, Protocol, Resource, ResourceId,
};

/// One published port: `protocol` `host_address`:`host_port` on the host reaches
/// `address`:`port` behind `bridge`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Publication {
    /// The managed Bridge the destination is behind.
    pub bridge: Name,
    pub protocol: Protocol,
    /// Only this address of the host; `None`: every address the host has.
    pub host_address: Option<IpAddr>,
    pub host_port: u16,
    /// The destination behind the bridge.
    pub address: IpAddr,
    pub port: u16,
    /// Who declared it, and at which field (`Bridge/br0` `spec.publish[0]`).
    pub declared_by: ResourceId,
    pub field: String,
}

impl Publication {
    /// The publications a Bridge declares in `spec.publish`.
    pub fn of_bridge(bridge: &Name, publish: &[BridgePublish]) -> Vec<Publication> {
        publish
            .iter()
            .enumerate()
            .map(|(i, p)| Publication {
                bridge: bridge.clone(),
                protocol: p.protocol,
                host_address: p.host_address,
                host_port: p.host_port,
                address: p.address,
                port: p.port.unwrap_or(p.host_port),
                declared_by: ResourceId::new(Kind::Bridge, bridge.clone()),
                field: format!("spec.publish[{i}]"),
            })
            .collect()
    }

    /// Whether this and `other` claim the same port on the host: the same protocol and
    /// port, on the same address or on every address, of the same family (a port
    /// published to an IPv4 address is only ever DNAT of IPv4, and the same for IPv6).
    pub fn clashes_with(&self, other: &Publication) -> bool {
        self.protocol == other.protocol
            && self.address.is_ipv4() == other.address.is_ipv4()
            && self.host_port == other.host_port
            && match (self.host_address, other.host_address) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whether it answers on the host's IPv4 loopback (127.0.0.1), reached from the host
    /// itself: on every address of the host or on a loopback one, to an IPv4 address.
    /// IPv6 has no such thing: a packet from ::1 never leaves the host's loopback, so a
    /// port published to an IPv6 address does not answer on [::1] (validation refuses
    /// `hostAddress: ::1`).
    pub fn on_loopback(&self) -> bool {
        self.address.is_ipv4() && self.host_address.is_none_or(|a| a.is_loopback())
    }

    /// `tcp *:8080` or `udp 192.0.2.1:53`: the host side, as people read it.
    pub fn host_side(&self) -> String {
        match self.host_address {
            Some(address) => format!("{} {address}:{}", self.protocol, self.host_port),
            None => format!("{} *:{}", self.protocol, self.host_port),
        }
    }
}

impl fmt::Display for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}:{}", self.host_side(), self.address, self.port)
    }
}

/// How a guest on a bridge is reached: what the guest declares about its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest<'a> {
    /// A container: its `spec.network.address`.
    Container { address: Option<&'a Cidr> },
    /// A VM NIC: its `mac`, leased a fixed address by the bridge's `dhcp.static`.
    Nic { mac: Option<MacAddress> },
}

/// Why a guest's published port has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoTarget {
    /// A container without a static `address`.
    NoAddress,
    /// A VM NIC without a `mac`.
    NoMac,
    /// The bridge serves no DHCP, so the VM NIC with this MAC has no fixed address on it.
    NoDhcp(MacAddress),
    /// The bridge's `dhcp.static` has no lease for this MAC.
    NoStaticLease(MacAddress),
}

/// The address behind `bridge` that a guest's published ports go to.
/// A container's is its address, IPv4 or IPv6; a VM NIC's its static DHCP lease (IPv4).
pub fn guest_target(guest: Guest<'_>, bridge: &BridgeSpec) -> Result<IpAddr, NoTarget> {
    match guest {
        Guest::Container { address: None } => Err(NoTarget::NoAddress),
        Guest::Container {
            address: Some(cidr),
        } => Ok(cidr.addr()),
        Guest::Nic { mac: None } => Err(NoTarget::NoMac),
        Guest::Nic { mac: Some(mac) } => {
            let dhcp = bridge.dhcp.as_ref().ok_or(NoTarget::NoDhcp(mac))?;
            dhcp.static_leases
                .iter()
                .find(|lease| lease.mac == mac)
                .map(|lease| IpAddr::V4(lease.address))
                .ok_or(NoTarget::NoStaticLease(mac))
        }
    }
}

/// One guest's `publish` list on one bridge.
#[derive(Debug, Clone)]
pub struct GuestPublish<'a> {
    pub bridge: &'a Name,
    pub guest: Guest<'a>,
    pub publish: &'a [PortPublish],
    /// Where the list is declared: `spec.network.publish`, `spec.networks[1].publish`.
    pub field: String,
}

/// The `publish` lists a Container or a VM declares (none for other kinds).
pub fn guest_lists(resource: &Resource) -> Vec<GuestPublish<'_>> {
    if let Some(spec) = resource.spec.get::<ContainerSpec>() {
        return spec
            .network
            .iter()
            .filter(|network| !network.publish.is_empty())
            .map(|network| GuestPublish {
                bridge: &network.bridge,
                guest: Guest::Container {
                    address: network.address.as_ref(),
                },
                publish: &network.publish,
                field: "spec.network.publish".to_owned(),
            })
            .collect();
    }
    match resource.spec.get::<VirtualMachineSpec>() {
        Some(spec) => spec
            .networks
            .iter()
            .enumerate()
            .filter(|(_, nic)| !nic.publish.is_empty())
            .map(|(i, nic)| GuestPublish {
                bridge: &nic.bridge,
                guest: Guest::Nic { mac: nic.mac },
                publish: &nic.publish,
                field: format!("spec.networks[{i}].publish"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The publications one resource declares. `bridge` finds a declared Bridge's spec by
/// name: a guest's publications go to an address only its bridge knows (a VM's static
/// lease), and those without one are left out here (validation refuses them).
pub fn of_resource<'a>(
    resource: &Resource,
    bridge: impl Fn(&Name) -> Option<&'a BridgeSpec>,
) -> Vec<Publication> {
    if let Some(spec) = resource.spec.get::<BridgeSpec>() {
        return Publication::of_bridge(&resource.metadata.name, &spec.publish);
    }
    let declared_by = resource.id();
    let mut publications = Vec::new();
    for list in guest_lists(resource) {
        let Some(address) =
            bridge(list.bridge).and_then(|spec| guest_target(list.guest, spec).ok())
        else {
            continue;
        };
        publications.extend(list.publish.iter().enumerate().map(|(i, p)| Publication {
            bridge: list.bridge.clone(),
            protocol: p.protocol,
            host_address: p.host_address,
            host_port: p.host_port,
            address,
            port: p.port.unwrap_or(p.host_port),
            declared_by: declared_by.clone(),
            field: format!("{}[{i}]", list.field),
        }));
    }
    publications
}

/// Every publication of the revision behind `bridge`, in declaration order: the
/// bridge's own, then the containers' and the VMs'.
pub fn collect(context: &PlanContext, bridge: &Name) -> Vec<Publication> {
    let spec_of = |name: &Name| {
        context
            .referenced(Kind::Bridge, name)
            .and_then(|r| r.spec.get::<BridgeSpec>())
    };
    [Kind::Bridge, Kind::Container, Kind::VirtualMachine]
        .into_iter()
        .flat_map(|kind| context.declared_of(kind))
        .flat_map(|resource| of_resource(resource, spec_of))
        .filter(|publication| &publication.bridge == bridge)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(protocol: Protocol, host: Option<&str>, port: u16) -> Publication {
        let bridge = Name::parse("br0").unwrap();
        Publication {
            bridge: bridge.clone(),
            protocol,
            host_address: host.map(|h| h.parse().unwrap()),
            host_port: port,
            address: "10.0.0.10".parse().unwrap(),
            port: 80,
            declared_by: ResourceId::new(Kind::Bridge, bridge),
            field: "spec.publish[0]".into(),
        }
    }

    #[test]
    fn one_host_port_is_claimed_once_per_protocol_and_address() {
        let any = publication(Protocol::Tcp, None, 8080);
        assert!(any.clashes_with(&publication(Protocol::Tcp, Some("192.0.2.1"), 8080)));
        assert!(any.clashes_with(&publication(Protocol::Tcp, None, 8080)));
        assert!(!any.clashes_with(&publication(Protocol::Udp, None, 8080)));
        assert!(!any.clashes_with(&publication(Protocol::Tcp, None, 8081)));
        let one = publication(Protocol::Tcp, Some("192.0.2.1"), 8080);
        assert!(!one.clashes_with(&publication(Protocol::Tcp, Some("192.0.2.2"), 8080)));
        assert_eq!(any.to_string(), "tcp *:8080 -> 10.0.0.10:80");
        let ipv6 = Publication {
            address: "fd00::10".parse().unwrap(),
            ..publication(Protocol::Tcp, None, 8080)
        };
        assert!(!any.clashes_with(&ipv6), "one port, two families");
        assert!(ipv6.clashes_with(&ipv6.clone()));
        assert_eq!(one.host_side(), "tcp 192.0.2.1:8080");
    }
}
