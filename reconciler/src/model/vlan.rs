//! 802.1Q VLANs on a managed bridge: the VLANs a bridge port (or a VM's tap, a
//! container's veth) carries, the ports a Bridge enslaves with theirs, and VLAN
//! sub-interfaces of the bridge itself (`<bridge>.<id>`) that give the host an address on
//! a VLAN.
//!
//! All of it needs `vlanFiltering: true` on the bridge (checked by `validate`); the
//! kernel keeps VLAN membership per port, and the bridge driver sets it over netlink.
//! A bridge port is written either as a plain interface name (as before VLANs existed) or
//! as `{name, vlans}`: [`BridgePort`] reads both, and writes the plain name back when the
//! port has no VLANs, so plans and stored specs of bridges without VLANs do not change.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Cidr, InterfaceName};

/// The lowest and highest VLAN id a port can carry (0 and 4095 are reserved by 802.1Q).
pub const VLAN_ID_MIN: u16 = 1;
pub const VLAN_ID_MAX: u16 = 4094;

/// One VLAN on a port: its id, whether untagged frames entering the port belong to it
/// (`pvid`, at most one per port) and whether frames leave the port untagged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vlan {
    /// The VLAN id, 1-4094.
    #[schemars(range(min = 1, max = 4094))]
    pub id: u16,
    /// Untagged frames entering the port are put on this VLAN (the port VLAN id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pvid: bool,
    /// Frames of this VLAN leave the port without a tag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untagged: bool,
}

impl fmt::Display for Vlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if self.pvid {
            f.write_str(" pvid")?;
        }
        if self.untagged {
            f.write_str(" untagged")?;
        }
        Ok(())
    }
}

/// A host interface a bridge enslaves, with the VLANs it carries (empty: the kernel's
/// default, VLAN 1 untagged as the port VLAN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePort {
    pub name: InterfaceName,
    pub vlans: Vec<Vlan>,
}

impl BridgePort {
    pub fn as_str(&self) -> &str {
        self.name.as_str()
    }
}

impl fmt::Display for BridgePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.name.fmt(f)
    }
}

impl From<InterfaceName> for BridgePort {
    fn from(name: InterfaceName) -> Self {
        BridgePort {
            name,
            vlans: Vec::new(),
        }
    }
}

/// The mapping form of a port.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "BridgePortWithVlans")]
struct PortWithVlans {
    /// The host interface to enslave.
    name: InterfaceName,
    /// The VLANs the port carries (needs `vlanFiltering: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    vlans: Vec<Vlan>,
}

impl Serialize for BridgePort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.vlans.is_empty() {
            self.name.serialize(serializer)
        } else {
            PortWithVlans {
                name: self.name.clone(),
                vlans: self.vlans.clone(),
            }
            .serialize(serializer)
        }
    }
}

/// Reads a plain name through the scalar callbacks and the mapping form through the
/// deserializer's own map access, so errors inside `{name, vlans}` keep their exact
/// positions (`#[serde(untagged)]` would buffer the value and lose them).
impl<'de> Deserialize<'de> for BridgePort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl<'de> Visitor<'de> for PortVisitor {
            type Value = BridgePort;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an interface name, or a mapping with `name` and `vlans`")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<BridgePort, E> {
                InterfaceName::parse(text)
                    .map(BridgePort::from)
                    .map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<BridgePort, E> {
                self.visit_str(&number.to_string())
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<BridgePort, E> {
                self.visit_str(&number.to_string())
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BridgePort, M::Error> {
                let port = PortWithVlans::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(BridgePort {
                    name: port.name,
                    vlans: port.vlans,
                })
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

impl JsonSchema for BridgePort {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BridgePort".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let name = generator.subschema_for::<InterfaceName>();
        let with_vlans = generator.subschema_for::<PortWithVlans>();
        schemars::json_schema!({
            "description": "A host interface to enslave: its name, or {name, vlans}",
            "anyOf": [name, with_vlans]
        })
    }
}

/// A VLAN sub-interface of the bridge, `<bridge>.<id>`: the host's own link on that
/// VLAN, with its addresses (so the host can reach and route between VLANs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VlanInterface {
    /// The VLAN id, 1-4094.
    #[schemars(range(min = 1, max = 4094))]
    pub id: u16,
    /// Addresses on the sub-interface, IPv4 or IPv6 in CIDR form. Exactly these are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
}

impl VlanInterface {
    /// The sub-interface's name on the host.
    pub fn link_name(&self, bridge: &str) -> String {
        format!("{bridge}.{}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_a_plain_name_or_a_mapping_and_writes_back_the_same() {
        let ports: Vec<BridgePort> = serde_yaml::from_str(
            "[eth0, {name: eth1, vlans: [{id: 10, pvid: true, untagged: true}, {id: 20}]}]",
        )
        .unwrap();
        assert_eq!(
            ports[0],
            BridgePort::from(InterfaceName::parse("eth0").unwrap())
        );
        assert_eq!(ports[1].name.as_str(), "eth1");
        assert_eq!(
            ports[1].vlans,
            vec![
                Vlan {
                    id: 10,
                    pvid: true,
                    untagged: true
                },
                Vlan {
                    id: 20,
                    pvid: false,
                    untagged: false
                }
            ]
        );
        let json = serde_json::to_value(&ports).unwrap();
        assert_eq!(
            json,
            serde_json::json!(["eth0", {"name": "eth1", "vlans": [{"id": 10, "pvid": true, "untagged": true}, {"id": 20}]}])
        );
    }

    #[test]
    fn a_bad_port_says_what_is_expected() {
        for bad in ["[[eth0]]", "[{name: eth0, vlan: []}]", "[\"a/b\"]"] {
            assert!(
                serde_yaml::from_str::<Vec<BridgePort>>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
