//! Sizes as LVM allocates them: whole extents of the volume group's extent size.
//!
//! A declared size that is not a whole number of extents is rounded up (as `lvcreate`
//! would, silently); the driver does it itself, says so in the plan, and compares the
//! host with the rounded size, so such a volume plans as a no-op once created.

use crate::model::ByteSize;

/// `bytes` rounded up to a whole number of `extent`s (`extent` 0 leaves it as it is).
pub fn round_up(bytes: u64, extent: u64) -> u64 {
    if extent == 0 {
        return bytes;
    }
    bytes.div_ceil(extent).saturating_mul(extent)
}

/// How many extents `bytes` (already rounded) takes.
pub fn extents(bytes: u64, extent: u64) -> u64 {
    if extent == 0 {
        0
    } else {
        bytes.div_ceil(extent)
    }
}

/// A size as manifests write it: `1GiB`, `1004MiB`, or bytes when nothing shorter is
/// exact.
pub fn show_bytes(bytes: u64) -> String {
    ByteSize(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_extents() {
        let extent = 4 << 20;
        assert_eq!(round_up(1 << 30, extent), 1 << 30);
        assert_eq!(round_up(1000 << 20, extent), 1000 << 20);
        assert_eq!(round_up((1000 << 20) + 1, extent), 1004 << 20);
        assert_eq!(round_up(1, extent), extent);
        assert_eq!(extents(1004 << 20, extent), 251);
        assert_eq!(show_bytes(1004 << 20), "1004MiB");
        assert_eq!(show_bytes(1 << 30), "1GiB");
    }
}
