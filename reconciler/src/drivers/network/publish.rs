//! [`Publication`]: one published port, as a plain value whoever declared it.
//!
//! A port is published by a Bridge (`spec.publish`, naming the address behind it) and,
//! once their models carry it, by a Container's network or a VM's NIC (`publish:` with
//! the workload's own address). Every source turns into the same value, so the nftables
//! rules, the plan and validation's uniqueness check treat them alike. [`collect`] reads
//! them from the revision; it is the one place a new source is added.

use std::fmt;
use std::net::IpAddr;

use crate::contract::PlanContext;
use crate::model::{BridgePublish, Kind, Name, Protocol, Resource, ResourceId, Spec};

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
    /// port, on the same address or on every address.
    pub fn clashes_with(&self, other: &Publication) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_address, other.host_address) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
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

/// The publications one resource declares (only Bridges so far; Containers' and VMs'
/// `publish` join here when their models carry it).
pub fn of_resource(resource: &Resource) -> Vec<Publication> {
    match &resource.spec {
        Spec::Bridge(spec) => Publication::of_bridge(&resource.metadata.name, &spec.publish),
        _ => Vec::new(),
    }
}

/// Every publication of the revision, behind `bridge`, in declaration order.
pub fn collect(context: &PlanContext, bridge: &Name) -> Vec<Publication> {
    [Kind::Bridge, Kind::Container, Kind::VirtualMachine]
        .into_iter()
        .flat_map(|kind| context.declared_of(kind))
        .flat_map(|resource| of_resource(resource))
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
        assert_eq!(one.host_side(), "tcp 192.0.2.1:8080");
    }
}
