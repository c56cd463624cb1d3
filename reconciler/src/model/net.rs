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

    /// Whether the address only has meaning on its own link (fe80::/10, 169.254.0.0/16),
    /// so the same one may be used on several links.
    pub fn is_link_local(&self) -> bool {
        match self.addr() {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        }
    }

    /// Why this cannot be an interface's address, if it cannot: the kernel refuses it,
    /// silently ignores it, or takes it to mean something else than an address.
    pub fn interface_problem(&self) -> Option<String> {
        if self.prefix_len() == 0 {
            return Some(format!(
                "{self} has prefix length 0, which would put every destination on this link; write the subnet's prefix length, e.g. /24 or /64"
            ));
        }
        if let Some(problem) = unicast_problem(self.addr()) {
            return Some(format!("{self} {problem}"));
        }
        if let IpAddr::V4(v4) = self.addr() {
            let prefix = self.prefix_len();
            if prefix <= 30 {
                let host_bits = u32::MAX >> prefix;
                let bits = u32::from(v4) & host_bits;
                if bits == 0 {
                    return Some(format!(
                        "{self} is the network address of {}, not a host address in it",
                        self.0.trunc()
                    ));
                }
                if bits == host_bits {
                    return Some(format!(
                        "{self} is the broadcast address of {}, not a host address in it",
                        self.0.trunc()
                    ));
                }
            }
        }
        None
    }
}

/// Why `ip` cannot be a host's own unicast address (an interface address or a gateway).
pub fn unicast_problem(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("is the unspecified address, which no interface can have");
    }
    if ip.is_multicast() {
        return Some(
            "is a multicast address: hosts join multicast groups, no interface has one as its address",
        );
    }
    if ip.is_loopback() {
        return Some("is a loopback address: only the `lo` interface has those");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => {
            Some("is the limited broadcast address, which no interface can have")
        }
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("is an IPv4-mapped IPv6 address: write the IPv4 address itself")
        }
        _ => None,
    }
}

/// Whether an IPv4 address is written with a leading zero in some octet (`010.0.0.1`),
/// which some tools read as octal and others as decimal.
fn has_leading_zero(text: &str) -> bool {
    let address = text.split('/').next().unwrap_or(text);
    !address.contains(':')
        && address
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'))
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = super::quoted(text);
        if has_leading_zero(text) {
            return Err(format!(
                "invalid CIDR {shown}: an octet has a leading zero, which some tools read as octal; write it without (10.0.0.1/24)"
            ));
        }
        if text
            .split('/')
            .nth(1)
            .is_some_and(|p| p.len() > 1 && p.starts_with('0'))
        {
            return Err(format!(
                "invalid CIDR {shown}: the prefix length has a leading zero"
            ));
        }
        text.parse::<IpNet>().map(Cidr).map_err(|_| {
            format!("invalid CIDR {shown}: expected an address with a prefix length, like 10.0.0.1/24 or fd00::1/64")
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
            "pattern": "^(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])|[0-9a-fA-F.]*:[0-9a-fA-F:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))$"
        })
    }
}

/// A unicast Ethernet MAC address, `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = super::quoted(text);
        let invalid = || {
            format!("invalid MAC address {shown}: expected six hex octets like 52:54:00:12:34:56")
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
            return Err(format!("invalid MAC address {shown}: multicast bit set"));
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
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "300.0.0.1/24",
            "x/24",
            "010.0.0.1/24",
            "10.0.0.01/24",
            "10.0.0.1/024",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("fd00::0/64".parse::<Cidr>().is_ok());
    }

    #[test]
    fn interface_addresses() {
        let problem = |text: &str| text.parse::<Cidr>().unwrap().interface_problem();
        for good in [
            "10.0.0.1/24",
            "fd00::1/64",
            "10.0.0.0/31",
            "192.0.2.7/32",
            "fe80::1/64",
        ] {
            assert_eq!(problem(good), None, "{good}");
        }
        for (bad, reason) in [
            ("0.0.0.0/0", "prefix length 0"),
            ("::/0", "prefix length 0"),
            ("0.0.0.0/8", "unspecified"),
            ("::/64", "unspecified"),
            ("224.0.0.1/24", "multicast"),
            ("ff02::5/64", "multicast"),
            ("127.0.0.2/8", "loopback"),
            ("::1/128", "loopback"),
            ("255.255.255.255/32", "limited broadcast"),
            ("::ffff:10.0.0.1/96", "IPv4-mapped"),
            ("10.0.0.255/24", "broadcast address of 10.0.0.0/24"),
            ("10.0.0.0/24", "network address"),
        ] {
            let found = problem(bad).unwrap_or_default();
            assert!(found.contains(reason), "{bad}: {found}");
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
