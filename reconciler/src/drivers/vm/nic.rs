//! A VM's network interfaces on the host: tap names, their marker, MAC addresses.
//!
//! Every NIC is a persistent tap that gitvisor creates (`gitvisor-tap`), marks with the
//! `ifalias` `gitvisor:vm/<vm>/<index>` and enslaves to the declared Bridge; QEMU opens
//! it by name. The alias is what ties a tap to its VM: observe finds a VM's taps by alias,
//! never by name, and the Bridge driver never releases a port whose alias starts with
//! `gitvisor:`.
//!
//! # Names
//!
//! `vm_<8 hex>_<index>`: the hex digits are the start of the SHA-256 of the VM's name, so
//! the name is stable and fits IFNAMSIZ whatever the VM's name; `_` never occurs in a
//! declared name, so no Bridge can be declared with it. The kernel ignores an alias given
//! at creation, so a tap is created under `vt_<8 hex>_<index>`, marked, then renamed:
//! a tap under its final name always carries its marker, and a leftover of a crash in
//! between can be traced to its VM (see the Bridge driver's `temporary.rs` for the same
//! rule).
//!
//! # MAC addresses
//!
//! Declared, or derived: QEMU's locally administered prefix `52:54:00` and three bytes of
//! the SHA-256 of `<vm>/<index>`, so a VM keeps its MAC address (and its DHCP lease)
//! across restarts and hosts.

use sha2::{Digest, Sha256};

use crate::model::MacAddress;

/// What every tap alias starts with.
pub const TAP_ALIAS_PREFIX: &str = "gitvisor:vm/";
const FINAL_PREFIX: &str = "vm_";
const TEMPORARY_PREFIX: &str = "vt_";

fn name_hash(vm: &str) -> String {
    Sha256::digest(vm.as_bytes())
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The tap of `vm`'s NIC `index`.
pub fn tap_name(vm: &str, index: usize) -> String {
    format!("{FINAL_PREFIX}{}_{index}", name_hash(vm))
}

/// The name that tap is created under before it is marked and renamed.
pub fn temporary_tap_name(vm: &str, index: usize) -> String {
    format!("{TEMPORARY_PREFIX}{}_{index}", name_hash(vm))
}

/// The marker of `vm`'s NIC `index`.
pub fn tap_alias(vm: &str, index: usize) -> String {
    format!("{TAP_ALIAS_PREFIX}{vm}/{index}")
}

/// The VM and NIC index an alias marks, if it is a tap marker.
pub fn parse_alias(alias: &str) -> Option<(&str, usize)> {
    let (vm, index) = alias.strip_prefix(TAP_ALIAS_PREFIX)?.rsplit_once('/')?;
    Some((vm, index.parse().ok()?))
}

/// The VM (by its hash) and index a temporary tap name was made for.
pub fn is_temporary_tap_of(name: &str, vm: &str) -> Option<usize> {
    let rest = name.strip_prefix(TEMPORARY_PREFIX)?;
    let (hash, index) = rest.split_once('_')?;
    (hash == name_hash(vm)).then(|| index.parse().ok())?
}

/// The MAC address of `vm`'s NIC `index`: the declared one, else derived.
pub fn mac_address(vm: &str, index: usize, declared: Option<MacAddress>) -> MacAddress {
    if let Some(mac) = declared {
        return mac;
    }
    let digest = Sha256::digest(format!("{vm}/{index}").as_bytes());
    MacAddress([0x52, 0x54, 0x00, digest[0], digest[1], digest[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::vm::MAX_VM_DEVICES;
    use crate::model::{IFNAME_MAX, Name};

    #[test]
    fn tap_names_fit_ifnamsiz_and_no_declaration_can_take_them() {
        let long = "v".repeat(63);
        for index in [0, MAX_VM_DEVICES - 1] {
            for name in [tap_name(&long, index), temporary_tap_name(&long, index)] {
                assert!(name.len() <= IFNAME_MAX, "{name}");
                assert!(gitvisor_tap::valid_name(&name));
                assert!(Name::parse(&name).is_err(), "{name}");
            }
        }
        assert_ne!(tap_name("vm1", 0), tap_name("vm2", 0));
        assert_ne!(tap_name("vm1", 0), tap_name("vm1", 1));
        assert_eq!(
            is_temporary_tap_of(&temporary_tap_name("vm1", 3), "vm1"),
            Some(3)
        );
        assert_eq!(
            is_temporary_tap_of(&temporary_tap_name("vm1", 3), "vm2"),
            None
        );
        assert_eq!(is_temporary_tap_of(&tap_name("vm1", 3), "vm1"), None);
    }

    #[test]
    fn aliases_name_vm_and_index() {
        assert_eq!(tap_alias("web.1", 2), "gitvisor:vm/web.1/2");
        assert_eq!(parse_alias("gitvisor:vm/web.1/2"), Some(("web.1", 2)));
        assert_eq!(parse_alias("gitvisor:managed"), None);
        assert_eq!(parse_alias("gitvisor:vm/web/x"), None);
    }

    #[test]
    fn macs_are_declared_or_stable_and_locally_administered() {
        let declared: MacAddress = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(mac_address("vm1", 0, Some(declared)), declared);
        let derived = mac_address("vm1", 0, None);
        assert_eq!(derived, mac_address("vm1", 0, None));
        assert_ne!(derived, mac_address("vm1", 1, None));
        assert_eq!(derived.0[..3], [0x52, 0x54, 0x00]);
    }
}
