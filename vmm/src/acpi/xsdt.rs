//! The Extended System Description Table (ACPI 6.5 §5.2.8): the 64-bit addresses of the
//! other tables (the FADT and the MADT; the DSDT is reached through the FADT).

use super::sdt::Sdt;

/// The XSDT listing the tables at `tables`.
pub fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut table = Sdt::new(*b"XSDT", 1, *b"GVMMXSDT");
    for address in tables {
        table.u64(*address);
    }
    table.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_header_as_64_bit_addresses() {
        let bytes = xsdt(&[0xe_1000, 0x1_0000_0000]);
        assert_eq!(&bytes[0..4], b"XSDT");
        assert_eq!(bytes.len(), 36 + 16);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().expect("4")), 52);
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(
            u64::from_le_bytes(bytes[36..44].try_into().expect("8")),
            0xe_1000
        );
        assert_eq!(
            u64::from_le_bytes(bytes[44..52].try_into().expect("8")),
            0x1_0000_0000
        );
    }
}
