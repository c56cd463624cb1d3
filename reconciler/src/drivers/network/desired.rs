//! What the revision asks of one bridge's network, beyond the link: its mode, the
//! subnets it masquerades, the ports published to it, its dnsmasq configuration and the
//! forwarding switches it needs. Pure: computed at plan time from the manifests and the
//! few host facts it depends on (the default route's interface), and carried to apply.

use crate::drivers::container::ContainerSpec;
use crate::drivers::vm::VirtualMachineSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};

use super::dnsmasq::{self, DhcpHost, DhcpPaths, HostRecord};
use super::publish::{self, Publication};
use super::rules::{self, Hook, Rule};
use crate::contract::PlanContext;
use crate::drivers::bridge::BridgeSpec;
use crate::model::{Kind, Name};

/// How a bridge's guests reach beyond it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `ports`, no `nat` or `uplink`: the bridge is a switch on the host's LAN; gitvisor
    /// adds no rules.
    Bridged,
    /// No `ports`, `nat` or `uplink`: guests reach the host's addresses on the bridge and
    /// nothing is forwarded to or from it.
    Isolated,
    /// `nat: true`: the IPv4 subnets are masqueraded out of `uplink` (any interface when
    /// unset).
    Nat { uplink: Option<String> },
    /// `uplink` without `nat`: forwarded to and from `uplink` unchanged.
    Routed { uplink: Option<String> },
}

impl Mode {
    pub fn of(spec: &BridgeSpec) -> Mode {
        let uplink = spec.uplink.as_ref().map(|u| u.as_str().to_owned());
        if spec.nat {
            Mode::Nat { uplink }
        } else if uplink.is_some() {
            Mode::Routed { uplink }
        } else if spec.ports.is_empty() {
            Mode::Isolated
        } else {
            Mode::Bridged
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            Mode::Bridged => "bridged",
            Mode::Isolated => "isolated",
            Mode::Nat { .. } => "nat",
            Mode::Routed { .. } => "routed",
        }
    }
}

/// One bridge's network as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNetwork {
    pub bridge: String,
    pub mode: Mode,
    /// The bridge's IPv4 subnets (from its addresses).
    pub subnets: Vec<Ipv4Net>,
    pub publications: Vec<Publication>,
    /// The dnsmasq configuration, when the bridge serves DHCP.
    pub dhcp: Option<String>,
    /// The IPv4 `forwarding` switch of each interface this bridge needs set: the bridge
    /// itself (on to forward, off when isolated) and the uplink (on).
    pub forwarding: BTreeMap<String, bool>,
    /// The interface traffic leaves by, when gitvisor turns its forwarding on (and back
    /// off when no bridge needs it any more).
    pub uplink_forwarding: Option<String>,
    /// Whether the bridge's `route_localnet` switch is on: a port published to an IPv4
    /// address behind it answers on the host's loopback (127.0.0.1), so packets from
    /// 127.0.0.0/8 are routed out of the bridge, masqueraded, and their replies routed
    /// back in, which the kernel refuses as martians with the switch off. Off otherwise
    /// (the bridge is gitvisor's, so is its switch: off is the kernel's default).
    pub route_localnet: bool,
}

impl BridgeNetwork {
    /// The declared network of `name`, whose spec is `spec`. `default_route`: the
    /// interface of the host's IPv4 default route, for NAT without an `uplink`.
    pub fn new(
        name: &Name,
        spec: &BridgeSpec,
        context: &PlanContext,
        default_route: Option<&str>,
        network_dir: &Path,
    ) -> BridgeNetwork {
        let bridge = name.as_str().to_owned();
        let mode = Mode::of(spec);
        let subnets: Vec<Ipv4Net> = spec
            .addresses
            .iter()
            .filter_map(|cidr| match cidr.0 {
                IpNet::V4(net) => Some(net.trunc()),
                IpNet::V6(_) => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let publications = match mode {
            Mode::Nat { .. } | Mode::Routed { .. } => publish::collect(context, name),
            Mode::Bridged | Mode::Isolated => Vec::new(),
        };
        let route_localnet = publications.iter().any(Publication::on_loopback);
        let mut forwarding = BTreeMap::new();
        let mut uplink_forwarding = None;
        match &mode {
            Mode::Bridged => {}
            Mode::Isolated => {
                forwarding.insert(bridge.clone(), false);
            }
            Mode::Nat { uplink } | Mode::Routed { uplink } => {
                forwarding.insert(bridge.clone(), true);
                let out = uplink.clone().or(default_route.map(str::to_owned));
                if let Some(out) = out.filter(|out| out != &bridge) {
                    forwarding.insert(out.clone(), true);
                    uplink_forwarding = Some(out);
                }
            }
        }
        let dhcp = spec.dhcp.as_ref().and_then(|dhcp| {
            let subnet = subnets
                .iter()
                .find(|net| net.contains(&dhcp.range.first))
                .copied()?;
            let (hosts, records) = guests(name, spec, context);
            Some(dnsmasq::render(
                &bridge,
                dhcp,
                subnet,
                &hosts,
                &records,
                &DhcpPaths::new(network_dir, &bridge),
                !matches!(mode, Mode::Isolated),
            ))
        });
        BridgeNetwork {
            bridge,
            mode,
            subnets,
            publications,
            dhcp,
            forwarding,
            uplink_forwarding,
            route_localnet,
        }
    }

    /// The rules this bridge needs, by hook (none for a bridged one).
    pub fn rules(&self) -> BTreeMap<Hook, Vec<Rule>> {
        rules::rules(self)
    }

    /// Whether it needs gitvisor's nftables table.
    pub fn needs_rules(&self) -> bool {
        !matches!(self.mode, Mode::Bridged)
    }
}

/// The guests the DHCP server of `bridge` knows by MAC address (the declared static
/// leases, then each VM NIC with a MAC on the bridge, named after its VM), and the
/// containers with a fixed address on it, whose names resolve as well.
fn guests(
    name: &Name,
    spec: &BridgeSpec,
    context: &PlanContext,
) -> (Vec<DhcpHost>, Vec<HostRecord>) {
    let mut hosts: Vec<DhcpHost> = Vec::new();
    let mut records = Vec::new();
    let mut named = BTreeSet::new();
    if let Some(dhcp) = &spec.dhcp {
        for lease in &dhcp.static_leases {
            let label = lease.name.as_ref().map(|n| n.as_str().to_owned());
            if let Some(label) = &label {
                named.insert(label.clone());
                records.push(HostRecord {
                    name: label.clone(),
                    address: lease.address,
                });
            }
            hosts.push(DhcpHost {
                mac: lease.mac,
                address: Some(lease.address),
                name: label,
            });
        }
    }
    for vm in context.declared_of(Kind::VirtualMachine) {
        let Some(spec) = vm.spec.get::<VirtualMachineSpec>() else {
            continue;
        };
        for nic in spec.networks.iter().filter(|nic| &nic.bridge == name) {
            let Some(mac) = nic.mac else { continue };
            if hosts.iter().any(|host| host.mac == mac) {
                continue;
            }
            let label =
                dns_label(vm.metadata.name.as_str()).filter(|label| named.insert(label.clone()));
            hosts.push(DhcpHost {
                mac,
                address: None,
                name: label,
            });
        }
    }
    for container in context.declared_of(Kind::Container) {
        let Some(spec) = container.spec.get::<ContainerSpec>() else {
            continue;
        };
        let Some(network) = spec.network.as_ref().filter(|n| &n.bridge == name) else {
            continue;
        };
        let Some(IpAddr::V4(address)) = network.address.map(|cidr| cidr.addr()) else {
            continue;
        };
        if let Some(label) =
            dns_label(container.metadata.name.as_str()).filter(|label| named.insert(label.clone()))
        {
            records.push(HostRecord {
                name: label,
                address,
            });
        }
    }
    (hosts, records)
}

/// A resource name as a DNS label, when it is one (no dots).
fn dns_label(name: &str) -> Option<String> {
    (!name.contains('.')).then(|| name.to_owned())
}
