//! Validated identifiers: resource names and host interface names.
//!
//! Names reach kernel interfaces and command lines, so they are checked when the manifest
//! is read, never later: a resource name is `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 63
//! characters (kinds with tighter limits, like a Bridge's 15-byte IFNAMSIZ, are checked by
//! the validator); an interface name follows the kernel's own rule.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

pub const NAME_MAX: usize = 63;
/// Longest interface name the kernel accepts (IFNAMSIZ minus the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// Names the kernel refuses for any interface: they name the per-protocol settings
/// directories `/proc/sys/net/ipv4/conf/all` and `…/default`.
pub const RESERVED_IFNAMES: [&str; 2] = ["all", "default"];

/// A resource name, unique per kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(text: &str) -> Result<Self, String> {
        let shown = super::quoted(text);
        let bytes = text.as_bytes();
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = !bytes.is_empty()
            && bytes.len() <= NAME_MAX
            && edge_ok(bytes[0])
            && edge_ok(bytes[bytes.len() - 1])
            && bytes.iter().all(|&b| edge_ok(b) || b == b'-' || b == b'.');
        if valid {
            Ok(Name(text.to_owned()))
        } else {
            Err(format!(
                "invalid name {shown}: must be 1-{NAME_MAX} characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Name::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Name {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Name".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_MAX,
            "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
        })
    }
}

/// The name of an existing host network interface (a bridge port, for instance).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct InterfaceName(String);

impl InterfaceName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let shown = super::quoted(text);
        if RESERVED_IFNAMES.contains(&text) {
            return Err(format!(
                "invalid interface name {shown}: the kernel reserves it (/proc/sys/net/*/conf/{text})"
            ));
        }
        let valid = !text.is_empty()
            && text.len() <= IFNAME_MAX
            && text != "."
            && text != ".."
            && text
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if valid {
            Ok(InterfaceName(text.to_owned()))
        } else {
            Err(format!(
                "invalid interface name {shown}: 1-{IFNAME_MAX} printable characters without '/', ':' or spaces"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        InterfaceName::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for InterfaceName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InterfaceName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": IFNAME_MAX,
            "pattern": "^[!-.0-9;-~]+$",
            "not": { "enum": [".", "..", "all", "default"] }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "br-lan", "vm1.root", "0x"] {
            assert!(Name::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a b", "a;rm", &"a".repeat(64)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        assert!(InterfaceName::parse("eth0").is_ok());
        assert!(InterfaceName::parse("enp0s31f6.100").is_ok());
        for bad in [
            "",
            "a/b",
            "a b",
            "sixteen-chars-xx",
            "..",
            ".",
            "all",
            "default",
            "a:1",
        ] {
            assert!(InterfaceName::parse(bad).is_err(), "{bad}");
        }
    }
}
