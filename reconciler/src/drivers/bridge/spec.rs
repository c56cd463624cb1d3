//! `kind: Bridge`: a Linux bridge managed over netlink.
//!
//! Modes follow from the fields: with `ports` it is *bridged* to the host's interfaces;
//! `nat: true` masquerades its IPv4 subnets out of the host (*NAT*), `uplink` without
//! `nat` routes them (*routed*); with none of `ports`, `nat` and `uplink` it is
//! *isolated* (host-only): guests reach the host's addresses on the bridge and nothing
//! beyond. `dhcp` serves addresses and names to guests; `publish` makes a guest's port
//! reachable on the host's addresses (NAT bridges). `docs/network.md` has the whole
//! picture; VLANs (`vlanFiltering`, `ports[].vlans`, `vlanInterfaces`) are in `vlan.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{
    BridgePort, BridgePublish, Cidr, Dhcp, InterfaceName, Kind, KindSpec, VlanInterface,
};

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
    /// Existing host interfaces to enslave (bridged mode), each a plain name or
    /// `{name, vlans}`. Empty: isolated mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<BridgePort>,
    /// Spanning tree protocol.
    #[serde(default)]
    pub stp: bool,
    /// 802.1Q VLAN filtering: ports forward only the VLANs they carry (`ports[].vlans`,
    /// VM NICs' and containers' `vlans`).
    #[serde(default)]
    pub vlan_filtering: bool,
    /// VLAN sub-interfaces of the bridge (`<bridge>.<id>`) with the host's addresses on
    /// those VLANs (needs `vlanFiltering: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlan_interfaces: Vec<VlanInterface>,
    /// Masquerade traffic leaving the host from this bridge's IPv4 subnets (NAT mode).
    #[serde(default)]
    pub nat: bool,
    /// The interface traffic from the bridge leaves the host by. With `nat`: masquerade
    /// only out of it (default: out of any interface, forwarding enabled on the one
    /// holding the default route). Without `nat`: route the bridge's subnets through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<InterfaceName>,
    /// Serve DHCP and DNS to guests on this bridge (one dnsmasq bound to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<Dhcp>,
    /// Ports of addresses behind this bridge published on the host's addresses
    /// (destination NAT; `nat: true` bridges only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<BridgePublish>,
    /// Administrative state.
    #[serde(default = "default_true")]
    pub up: bool,
}

pub(crate) fn default_true() -> bool {
    true
}

/// A Bridge refers to nothing.
impl KindSpec for BridgeSpec {
    const KIND: Kind = Kind::Bridge;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Metadata, Name, Resource, Spec};

    /// The hash recorded in state stores written before `Spec` was opened (when it was an
    /// untagged enum of the four spec types): the same spec must still hash to it, or
    /// every resource would look changed after an upgrade.
    #[test]
    fn a_bridges_spec_hash_is_the_one_stores_recorded() {
        let bridge: BridgeSpec =
            serde_yaml::from_str("addresses: [10.0.0.1/24]\nmtu: 9000").unwrap();
        let concrete = serde_json::to_string(&bridge).unwrap();
        let resource = Resource::new(
            Metadata::named(Name::parse("r1").unwrap()),
            Spec::new(bridge),
        );
        assert_eq!(serde_json::to_string(&resource.spec).unwrap(), concrete);
        assert_eq!(resource.spec_hash().unwrap(), "79d51787e9fdf34a1b46cb9a");
    }
}
