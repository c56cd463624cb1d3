//! The network module's seam: one batch read of everything it manages
//! ([`NetworkSeam::observe`]) and one kind of request ([`NetworkRequest`]), both plain
//! values, so tests assert the exact requests and the fake behaves like the host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;

use super::error::SeamError;
use super::nft::{TableState, Transaction};

/// What `nft -j list table inet gitvisor` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableObservation {
    /// `nft` cannot run here (not installed); the reason.
    Unavailable(String),
    Absent,
    Present(TableState),
}

/// One bridge's dnsmasq as found under the run dir.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhcpState {
    /// The configuration file's text, when there is one.
    pub config: Option<String>,
    /// The pid of the running dnsmasq, when one runs with that configuration.
    pub running: Option<u32>,
}

/// Everything the network module manages on this host, read in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkState {
    pub table: TableObservation,
    /// The IPv4 `forwarding` switch of every interface.
    pub forwarding: BTreeMap<String, bool>,
    /// The interfaces whose forwarding gitvisor turned on (recorded under the run dir).
    pub forwarding_enabled: BTreeSet<String>,
    /// The IPv4 `route_localnet` switch of every interface (`publish.rs`: published ports
    /// reached on the host's loopback need it on their bridge).
    pub route_localnet: BTreeMap<String, bool>,
    /// The interface of the IPv4 default route.
    pub default_route: Option<String>,
    /// Each bridge's dnsmasq directory under the run dir.
    pub dhcp: BTreeMap<String, DhcpState>,
    /// The sockets listening in this network namespace (TCP `LISTEN`, bound UDP), from
    /// `/proc/net/{tcp,tcp6,udp,udp6}`: a new publication of a port one of them holds
    /// would take its traffic, and is refused at plan.
    pub listeners: Vec<Listener>,
}

/// One listening socket: `protocol` `address`:`port` (an unspecified address: every one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub protocol: crate::model::Protocol,
    pub address: std::net::IpAddr,
    pub port: u16,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            std::net::IpAddr::V6(address) => {
                write!(f, "{} [{address}]:{}", self.protocol, self.port)
            }
            address => write!(f, "{} {address}:{}", self.protocol, self.port),
        }
    }
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkRequest {
    /// One atomic nftables transaction on gitvisor's table.
    Nft(Transaction),
    /// Sets a managed bridge's IPv4 forwarding switch.
    SetForwarding { interface: String, on: bool },
    /// Sets a managed bridge's IPv4 `route_localnet` switch: on, packets to and from
    /// 127.0.0.0/8 may be routed through it (a published port reached on 127.0.0.1).
    SetRouteLocalnet { bridge: String, on: bool },
    /// Turns an uplink's forwarding on and records that gitvisor did.
    EnableUplinkForwarding { interface: String },
    /// Turns forwarding off where gitvisor turned it on, and forgets the record.
    RestoreUplinkForwarding { interface: String },
    /// Writes the bridge's dnsmasq configuration (creating its directory).
    WriteDhcpConfig { bridge: String, config: String },
    /// Starts the bridge's dnsmasq, detached, on the written configuration.
    StartDhcp { bridge: String },
    /// Stops the bridge's dnsmasq `pid` (only if it is gitvisor's, for that bridge).
    StopDhcp { bridge: String, pid: u32 },
    /// Removes the bridge's dnsmasq directory (configuration, pid file, leases).
    RemoveDhcp { bridge: String },
}

impl fmt::Display for NetworkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkRequest::Nft(transaction) => write!(f, "{transaction}"),
            NetworkRequest::SetForwarding { interface, on } => {
                write!(
                    f,
                    "set net.ipv4.conf.{interface}.forwarding = {}",
                    u8::from(*on)
                )
            }
            NetworkRequest::SetRouteLocalnet { bridge, on } => write!(
                f,
                "set net.ipv4.conf.{bridge}.route_localnet = {}",
                u8::from(*on)
            ),
            NetworkRequest::EnableUplinkForwarding { interface } => {
                write!(f, "set net.ipv4.conf.{interface}.forwarding = 1 (uplink)")
            }
            NetworkRequest::RestoreUplinkForwarding { interface } => write!(
                f,
                "set net.ipv4.conf.{interface}.forwarding = 0 (no bridge uses the uplink any more)"
            ),
            NetworkRequest::WriteDhcpConfig { bridge, .. } => {
                write!(f, "write the dnsmasq configuration of {bridge}")
            }
            NetworkRequest::StartDhcp { bridge } => write!(f, "start dnsmasq for {bridge}"),
            NetworkRequest::StopDhcp { bridge, pid } => {
                write!(f, "stop dnsmasq for {bridge} (pid {pid})")
            }
            NetworkRequest::RemoveDhcp { bridge } => {
                write!(f, "remove the dnsmasq files of {bridge}")
            }
        }
    }
}

/// How the network module reaches the host: [`super::HostNetwork`] for real,
/// [`super::FakeNetwork`] in tests.
#[async_trait]
pub trait NetworkSeam: Send + Sync {
    /// Reads gitvisor's table, the forwarding switches, the default route and the
    /// dnsmasq directories, all at once.
    async fn observe(&self) -> Result<NetworkState, SeamError>;

    /// Carries out one request. A request whose effect is already there succeeds only
    /// where the host really shows it (a table already gone, a dnsmasq already stopped).
    async fn send(&self, request: &NetworkRequest) -> Result<(), SeamError>;
}
