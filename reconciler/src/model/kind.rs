//! The kind of a resource: an open set, extended by registering a driver folder.
//!
//! A kind used to be a closed enum, so adding one edited the loader, the schema, the
//! planner, doctor and the CLI. Now a [`Kind`] is a small `Copy` value (its name and its
//! rank) that a driver folder defines, and the kinds this process knows are a list the
//! folders add themselves to ([`Kind::register`], called by the drivers' registration);
//! parsing a kind (`kind:`, `dependsOn`, `--target`, store keys, the API) asks that list.
//!
//! The built-in kinds are seeded here by name ([`Kind::BUILT_IN`]) rather than by
//! their folders at link time: a link-time registry (`linkme`) needs `#[link_section]`,
//! which the workspace's `unsafe_code = "forbid"` refuses, and the model (below the
//! drivers in the module graph) must know them before any driver is connected.
//!
//! `rank` orders kinds wherever order shows: sorted output, status tables, the delete
//! order's tie-break ("VMs and containers before volumes and bridges"). The built-in
//! ranks keep the order they always had: Bridge, Volume, Container, VirtualMachine.

use std::fmt;
use std::str::FromStr;
use std::sync::RwLock;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind of resource: `Bridge`, `Volume`, … Equal kinds have equal names and ranks.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind {
    name: &'static str,
    rank: u16,
}

// The built-in kinds keep their familiar spelling (`Kind::Bridge`), as constants.
#[allow(non_upper_case_globals)]
impl Kind {
    pub const Bridge: Kind = Kind::new("Bridge", 10);
    pub const NfsMount: Kind = Kind::new("NfsMount", 15);
    pub const Volume: Kind = Kind::new("Volume", 20);
    pub const Container: Kind = Kind::new("Container", 30);
    pub const VirtualMachine: Kind = Kind::new("VirtualMachine", 40);
}

/// Kinds registered beyond [`Kind::BUILT_IN`] (by a driver registered at run time).
static REGISTERED: RwLock<Vec<Kind>> = RwLock::new(Vec::new());

/// Registering a kind whose name is taken by another kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kind {name} is registered twice (ranks {existing} and {new}): give the new kind its own name"
)]
pub struct KindTaken {
    pub name: &'static str,
    pub existing: u16,
    pub new: u16,
}

impl Kind {
    /// The kinds every build has, in rank order.
    pub const BUILT_IN: [Kind; 5] = [
        Kind::Bridge,
        Kind::NfsMount,
        Kind::Volume,
        Kind::Container,
        Kind::VirtualMachine,
    ];

    /// A kind named `name` (as written in manifests), ordered by `rank` among the others.
    pub const fn new(name: &'static str, rank: u16) -> Self {
        Kind { name, rank }
    }

    pub fn as_str(self) -> &'static str {
        self.name
    }

    pub fn rank(self) -> u16 {
        self.rank
    }

    /// Makes `kind` known to parsing ([`Kind::from_str`], [`Kind::all`]). Registering the
    /// same kind again does nothing; another kind of the same name is refused.
    pub fn register(kind: Kind) -> Result<(), KindTaken> {
        let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
        let taken = Kind::BUILT_IN
            .iter()
            .chain(registered.iter())
            .find(|known| known.name == kind.name);
        match taken {
            Some(known) if *known == kind => Ok(()),
            Some(known) => Err(KindTaken {
                name: kind.name,
                existing: known.rank,
                new: kind.rank,
            }),
            None => {
                registered.push(kind);
                Ok(())
            }
        }
    }

    /// Every kind this process knows, in rank order.
    pub fn all() -> Vec<Kind> {
        let registered = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Kind> = Kind::BUILT_IN
            .iter()
            .chain(registered.iter())
            .copied()
            .collect();
        all.sort();
        all
    }

    /// The kind named `text` ignoring case (`bridge`, `BRIDGE`): for the command line.
    pub fn parse_any_case(text: &str) -> Result<Kind, String> {
        Kind::all()
            .into_iter()
            .find(|k| k.name.eq_ignore_ascii_case(text))
            .ok_or_else(|| unknown(&format!("{text:?}")))
    }
}

/// `unknown kind "X": expected one of Bridge, Volume, …`, from the registered kinds.
fn unknown(shown: &str) -> String {
    let names: Vec<&str> = Kind::all().iter().map(|k| k.name).collect();
    format!("unknown kind {shown}: expected one of {}", names.join(", "))
}

impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.rank, self.name).cmp(&(other.rank, other.name))
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Just the name, as the enum's derived `Debug` printed it.
impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::all()
            .into_iter()
            .find(|k| k.name == text)
            .ok_or_else(|| unknown(&super::quoted(text).to_string()))
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The registered kinds' names, as the enum's derived schema listed them.
impl JsonSchema for Kind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Kind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Kind::all().iter().map(|k| k.name).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_keep_their_order_and_names() {
        let mut shuffled = vec![
            Kind::VirtualMachine,
            Kind::Bridge,
            Kind::Container,
            Kind::Volume,
            Kind::NfsMount,
        ];
        shuffled.sort();
        assert_eq!(shuffled, Kind::BUILT_IN);
        assert_eq!("Container".parse::<Kind>(), Ok(Kind::Container));
        assert_eq!(format!("{:?}", Kind::VirtualMachine), "VirtualMachine");
    }

    #[test]
    fn an_unknown_kind_lists_the_known_ones() {
        let error = "Bridges".parse::<Kind>().unwrap_err();
        assert!(
            error.starts_with(
                "unknown kind \"Bridges\": expected one of Bridge, NfsMount, Volume, Container, VirtualMachine"
            ),
            "{error}"
        );
    }

    /// (A kind registered here would show in every other test of this process, the
    /// checked-in schemas' `Kind/name` pattern among them: `tests/extension_kind.rs`
    /// registers one in a process of its own.)
    #[test]
    fn a_taken_name_is_refused_and_the_same_kind_again_is_nothing() {
        let error = Kind::register(Kind::new("Bridge", 5)).unwrap_err();
        assert_eq!((error.existing, error.new), (10, 5));
        Kind::register(Kind::Bridge).unwrap();
        assert_eq!(Kind::all(), Kind::BUILT_IN);
    }
}
