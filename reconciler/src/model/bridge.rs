//! `kind: Bridge`: a Linux bridge managed over netlink.
//!
//! Modes follow from the fields: with `ports` it is *bridged* to the host's interfaces,
//! without them it is *isolated* (host-only); `nat: true` masquerades traffic out of the host.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Cidr, InterfaceName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BridgeSpec {
    /// Link MTU (68-65535). Unset: the kernel's default, left alone afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 68, max = 65535))]
    pub mtu: Option<u32>,
    /// Addresses on the bridge, IPv4 or IPv6 in CIDR form. Exactly these are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
    /// Existing host interfaces to enslave (bridged mode). Empty: isolated mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<InterfaceName>,
    /// Spanning tree protocol.
    #[serde(default)]
    pub stp: bool,
    /// 802.1Q VLAN filtering.
    #[serde(default)]
    pub vlan_filtering: bool,
    /// Masquerade traffic leaving the host from this bridge's subnets (NAT mode).
    #[serde(default)]
    pub nat: bool,
    /// Administrative state.
    #[serde(default = "default_true")]
    pub up: bool,
}

pub(crate) fn default_true() -> bool {
    true
}
