//! The System Description Table header every ACPI table but the RSDP starts with
//! (ACPI 6.5 §5.2.6), and the checksum rule: all bytes of a table sum to zero modulo 256.
//!
//! A table is built as bytes: [`Sdt::new`] writes the 36-byte header with a zero length and
//! checksum, the caller appends the body, and [`Sdt::finish`] fills in the length and the
//! checksum. No layout-dependent structs: offsets are the spec's.

/// Length of the header.
pub const HEADER_LEN: usize = 36;
/// Offset of the length field.
pub const LENGTH_OFFSET: usize = 4;
/// Offset of the checksum byte.
pub const CHECKSUM_OFFSET: usize = 9;

/// OEM ID in every table and the RSDP.
pub const OEM_ID: [u8; 6] = *b"GITVSR";
/// OEM revision of every table.
pub const OEM_REVISION: u32 = 1;
/// Creator ID: the tool that wrote the table.
pub const CREATOR_ID: [u8; 4] = *b"GVMM";
/// Creator revision.
pub const CREATOR_REVISION: u32 = 1;

/// The byte that makes `bytes` sum to zero, counting the checksum slot as zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)))
}

/// A table being built.
#[derive(Debug, Clone)]
pub struct Sdt {
    bytes: Vec<u8>,
}

impl Sdt {
    /// A table with `signature`, `revision` and `table_id` (the OEM table ID) and no body.
    pub fn new(signature: [u8; 4], revision: u8, table_id: [u8; 8]) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&signature);
        bytes.extend_from_slice(&0u32.to_le_bytes()); // length, set by `finish`
        bytes.push(revision);
        bytes.push(0); // checksum, set by `finish`
        bytes.extend_from_slice(&OEM_ID);
        bytes.extend_from_slice(&table_id);
        bytes.extend_from_slice(&OEM_REVISION.to_le_bytes());
        bytes.extend_from_slice(&CREATOR_ID);
        bytes.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
        Sdt { bytes }
    }

    pub fn push(&mut self, byte: u8) {
        self.bytes.push(byte);
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    pub fn u16(&mut self, value: u16) {
        self.extend(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.extend(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.extend(&value.to_le_bytes());
    }

    /// Bytes so far (header included).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The finished table: length and checksum filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let length = self.bytes.len() as u32;
        self.bytes[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_le_bytes());
        self.bytes[CHECKSUM_OFFSET] = 0;
        self.bytes[CHECKSUM_OFFSET] = checksum(&self.bytes);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_has_the_spec_layout_and_the_table_sums_to_zero() {
        let mut table = Sdt::new(*b"TEST", 3, *b"TABLEID_");
        table.u32(0xdead_beef);
        let bytes = table.finish();
        assert_eq!(bytes.len(), HEADER_LEN + 4);
        assert_eq!(&bytes[0..4], b"TEST");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().expect("4")), 40);
        assert_eq!(bytes[8], 3, "revision");
        assert_eq!(&bytes[10..16], b"GITVSR", "OEM ID");
        assert_eq!(&bytes[16..24], b"TABLEID_", "OEM table ID");
        assert_eq!(&bytes[28..32], b"GVMM", "creator ID");
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(&bytes[36..40], &0xdead_beefu32.to_le_bytes());
    }

    #[test]
    fn the_checksum_complements_the_sum() {
        assert_eq!(checksum(&[]), 0);
        assert_eq!(checksum(&[1, 2, 3]), 250);
        assert_eq!(checksum(&[0x80, 0x80]), 0);
    }
}
