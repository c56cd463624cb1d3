//! The Root System Description Pointer (ACPI 6.5 §5.2.5), revision 2: where the guest
//! starts its walk. Linux finds it through `boot_params.acpi_rsdp_addr` (boot protocol
//! 2.14) or, for older paths, by scanning 0xE0000–0xFFFFF on 16-byte boundaries for its
//! signature; the VMM places it there and sets the zero-page field, so both work.
//!
//! Only the XSDT address is given: the 32-bit RSDT is optional from revision 2 on.

use super::sdt::{OEM_ID, checksum};

/// Length of a revision 2 RSDP.
pub const LEN: usize = 36;
/// The first checksum covers the revision 1 part.
const V1_LEN: usize = 20;

/// The RSDP pointing at the XSDT at `xsdt`.
pub fn rsdp(xsdt: u64) -> [u8; LEN] {
    let mut bytes = [0u8; LEN];
    bytes[0..8].copy_from_slice(b"RSD PTR ");
    bytes[9..15].copy_from_slice(&OEM_ID);
    bytes[15] = 2; // revision: ACPI 2.0 and later
    // 16..20: RSDT address, none.
    bytes[20..24].copy_from_slice(&(LEN as u32).to_le_bytes());
    bytes[24..32].copy_from_slice(&xsdt.to_le_bytes());
    bytes[8] = checksum(&bytes[..V1_LEN]);
    bytes[32] = checksum(&bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn both_checksums_hold_and_the_fields_sit_at_the_spec_offsets() {
        let bytes = rsdp(0xe_0040);
        assert_eq!(&bytes[0..8], b"RSD PTR ");
        assert_eq!(sum(&bytes[..20]), 0, "revision 1 checksum");
        assert_eq!(sum(&bytes), 0, "extended checksum");
        assert_eq!(&bytes[9..15], b"GITVSR");
        assert_eq!(bytes[15], 2);
        assert_eq!(&bytes[16..20], &[0; 4], "no RSDT");
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().expect("4")), 36);
        assert_eq!(
            u64::from_le_bytes(bytes[24..32].try_into().expect("8")),
            0xe_0040
        );
        assert_eq!(&bytes[33..36], &[0; 3], "reserved");
    }
}
