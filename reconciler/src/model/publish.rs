//! Published ports: a port of an address behind a managed bridge, made reachable on the
//! host's own addresses (destination NAT in gitvisor's nftables table).
//!
//! [`PortPublish`] is what a workload declares for itself (a container's network, a VM's
//! NIC): the guest's address is the workload's own. [`BridgePublish`] is the same on a
//! Bridge, naming the address behind the bridge it forwards to. Both become one plain
//! value in the network module (`drivers::network::Publication`), whoever declared it.

use std::fmt;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A transport protocol a port is published for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port of this workload published on the host: `hostPort` on the host (on
/// `hostAddress` only, or on every address of the host) reaches `port` of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortPublish {
    /// The port on the host (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: u16,
    /// The port in the guest (1-65535). Default: `hostPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Publish on this address of the host only, of the destination's address family
    /// (127.0.0.1 works, ::1 does not). Default: every address the host has, 127.0.0.1
    /// included, of the destination's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<IpAddr>,
}

/// A port of an address behind the bridge published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BridgePublish {
    /// The address behind the bridge (IPv4 or IPv6, inside one of the bridge's subnets).
    pub address: IpAddr,
    /// The port on the host (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: u16,
    /// The port at `address` (1-65535). Default: `hostPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Publish on this address of the host only, of the destination's address family
    /// (127.0.0.1 works, ::1 does not). Default: every address the host has, 127.0.0.1
    /// included, of the destination's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<IpAddr>,
}
