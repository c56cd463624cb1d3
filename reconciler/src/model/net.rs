//! Network values in manifests: interface addresses in CIDR form and MAC addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interface address with its prefix length, e.g. `10.0.0.1/24` or `fd00::1/64`.
/// Host bits are kept: `10.0.0.1/24` means the address 10.0.0.1 on a /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<IpNet>().map(Cidr).map_err(|_| {
            format!("invalid CIDR {text:?}: expected an address with a prefix length, like 10.0.0.1/24 or fd00::1/64")
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An IPv4 or IPv6 address with prefix length, e.g. 10.0.0.1/24",
            "type": "string",
            "pattern": "^([0-9.]+/[0-9]{1,2}|[0-9a-fA-F:.]+/[0-9]{1,3})$"
        })
    }
}

/// A unicast Ethernet MAC address, `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!("invalid MAC address {text:?}: expected six hex octets like 52:54:00:12:34:56")
        };
        let mut octets = [0u8; 6];
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(invalid());
        }
        for (octet, part) in octets.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(invalid());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if octets[0] & 1 == 1 {
            return Err(format!("invalid MAC address {text:?}: multicast bit set"));
        }
        Ok(MacAddress(octets))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for MacAddress {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MacAddress".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(c.prefix_len(), 24);
        assert_eq!(c.to_string(), "10.0.0.1/24");
        assert!("fd00::1/64".parse::<Cidr>().is_ok());
        for bad in ["10.0.0.1", "10.0.0.1/33", "300.0.0.1/24", "x/24"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert!("52:54:00:12:34:56".parse::<MacAddress>().is_ok());
        for bad in ["52:54:00:12:34", "01:00:00:00:00:00", "zz:54:00:12:34:56"] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad}");
        }
    }
}
