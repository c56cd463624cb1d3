//! DHCP and DNS for the guests of a bridge: an address range, a lease time, a DNS domain
//! and static leases by MAC address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Duration, MacAddress, Name};

/// `dhcp:` on a Bridge: one DHCP and DNS server (dnsmasq) bound to the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dhcp {
    /// The addresses handed out dynamically, `FIRST-LAST`, inside one of the bridge's
    /// IPv4 subnets: `10.0.0.100-10.0.0.199`.
    pub range: Ipv4Range,
    /// How long a lease lasts. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time: Option<Duration>,
    /// The DNS domain guests' names resolve in (`vm1.lab`). Default: bare names only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Name>,
    /// Fixed addresses by MAC address; their names resolve from the start.
    #[serde(default, rename = "static", skip_serializing_if = "Vec::is_empty")]
    pub static_leases: Vec<StaticLease>,
}

/// One fixed lease: the guest with `mac` always gets `address`, and `name` resolves to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticLease {
    pub mac: MacAddress,
    pub address: Ipv4Addr,
    /// The guest's host name (one DNS label). Default: no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
}

/// An inclusive range of IPv4 addresses, written `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Range {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Ipv4Range {
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.first <= address && address <= self.last
    }
}

impl FromStr for Ipv4Range {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = super::quoted(text);
        let invalid = || {
            format!(
                "invalid address range {shown}: expected FIRST-LAST, e.g. 10.0.0.100-10.0.0.199"
            )
        };
        let (first, last) = text.split_once('-').ok_or_else(invalid)?;
        let parse = |part: &str| -> Result<Ipv4Addr, String> {
            let part = part.trim();
            if part.split('.').any(|o| o.len() > 1 && o.starts_with('0')) {
                return Err(format!(
                    "invalid address range {shown}: an octet has a leading zero, which some tools read as octal"
                ));
            }
            part.parse().map_err(|_| invalid())
        };
        let range = Ipv4Range {
            first: parse(first)?,
            last: parse(last)?,
        };
        if range.first > range.last {
            return Err(format!(
                "invalid address range {shown}: the first address comes after the last"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for Ipv4Range {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Range {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Ipv4Range {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Ipv4Range".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An inclusive IPv4 address range FIRST-LAST, e.g. 10.0.0.100-10.0.0.199",
            "type": "string",
            "pattern": "^[0-9.]+ *- *[0-9.]+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let range: Ipv4Range = "10.0.0.100-10.0.0.199".parse().unwrap();
        assert_eq!(range.to_string(), "10.0.0.100-10.0.0.199");
        assert!(range.contains("10.0.0.150".parse().unwrap()));
        assert!(!range.contains("10.0.0.200".parse().unwrap()));
        for bad in [
            "10.0.0.100",
            "10.0.0.200-10.0.0.100",
            "10.0.0.1-x",
            "10.0.0.010-10.0.0.20",
            "fd00::1-fd00::2",
        ] {
            assert!(bad.parse::<Ipv4Range>().is_err(), "{bad}");
        }
    }
}
