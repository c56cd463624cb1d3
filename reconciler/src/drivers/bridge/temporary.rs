//! The temporary name a bridge is created under, before it is marked and renamed.
//!
//! # Why
//!
//! The kernel ignores `IFLA_IFALIAS` in the `RTM_NEWLINK` that creates a link (checked on
//! Linux 6.x: `ip link add NAME alias A type bridge` makes a bridge without an alias), so
//! the marker cannot travel with the create. Were the bridge created under its declared
//! name, an unmarked bridge of gitvisor's would carry that name until the marker is set,
//! and a crash in between would leave one that nobody can tell from an administrator's.
//!
//! So a bridge is created under a name no declaration can have, marked there, and only
//! then renamed to its declared name (it is still down, which a rename needs). No
//! unmarked bridge of gitvisor's ever carries a declared name, and "marker on the object
//! and store record" can be the one ownership rule, with no exception for crashes.
//!
//! # The name
//!
//! [`TEMPORARY_PREFIX`] followed by the first 12 hex digits of the SHA-256 of the resource
//! id (`Bridge/br0`): 15 bytes, the kernel's limit. Resource names never contain `_`, so
//! no declaration can use it (a unit test holds the name grammar to that). Being derived
//! from the id, a leftover can be traced back to the bridge it was made for; it is
//! removed only when the state store also records that bridge (the write-ahead intent
//! precedes the create) and it carries the marker or no alias at all (a crash between
//! create and marker). Anything else under a temporary name is left alone.
//!
//! VLAN sub-interfaces of a bridge (`<bridge>.<id>`) are created the same way, under
//! [`temporary_vlan_name`]; a leftover one is a `vlan` link on the bridge under that
//! name, with the marker or no alias.

use sha2::{Digest, Sha256};

use crate::model::ResourceId;

/// What every temporary name starts with. Reserved: declared names cannot contain `_`.
pub const TEMPORARY_PREFIX: &str = "gv_";

/// Hex digits of the id's hash in the name: the prefix plus these fill IFNAMSIZ - 1.
const HASH_DIGITS: usize = 12;

/// The name the bridge `id` is created under before it is renamed to its own.
pub fn temporary_name(id: &ResourceId) -> String {
    temporary_name_for(&id.to_string())
}

/// The name VLAN sub-interface `vlan` of the bridge `id` is created under, by the same
/// rule (marked there, then renamed to `<bridge>.<vlan>`). Its key, `Bridge/br0/vlan/10`,
/// is no resource id, since names never contain `/`.
pub fn temporary_vlan_name(id: &ResourceId, vlan: u16) -> String {
    temporary_name_for(&format!("{id}/vlan/{vlan}"))
}

fn temporary_name_for(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut name = String::with_capacity(TEMPORARY_PREFIX.len() + HASH_DIGITS);
    name.push_str(TEMPORARY_PREFIX);
    for byte in digest.iter().take(HASH_DIGITS / 2) {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bridge::testkit::id;
    use crate::model::{IFNAME_MAX, Name};

    #[test]
    fn the_name_fits_ifnamsiz_and_is_stable_per_id() {
        let name = temporary_name(&id("br0"));
        assert_eq!(name.len(), IFNAME_MAX);
        assert!(name.starts_with(TEMPORARY_PREFIX));
        assert_eq!(name, temporary_name(&id("br0")));
        assert_ne!(name, temporary_name(&id("br1")));
    }

    #[test]
    fn vlan_sub_interfaces_have_their_own_temporary_names() {
        let bridge = temporary_name(&id("br0"));
        let vlan = temporary_vlan_name(&id("br0"), 10);
        assert_eq!(vlan.len(), IFNAME_MAX);
        assert!(vlan.starts_with(TEMPORARY_PREFIX));
        assert_ne!(vlan, bridge);
        assert_ne!(vlan, temporary_vlan_name(&id("br0"), 11));
        assert_ne!(vlan, temporary_name(&id("br0.10")));
    }

    #[test]
    fn no_declared_name_can_be_a_temporary_name() {
        assert!(Name::parse(&temporary_name(&id("br0"))).is_err());
        assert!(Name::parse("gv_0123456789ab").is_err());
    }
}
