//! Identity page tables for entering long mode: 2 MiB pages covering the first
//! [`PD_COUNT`](crate::layout::PD_COUNT) GiB, so the kernel, the zero page, the command
//! line and the MMIO hole (virtio-mmio, IOAPIC, LAPIC) are all reachable at their
//! physical addresses. The Linux 64-bit boot protocol only requires the kernel, the zero
//! page and the command line to be identity-mapped; the kernel builds its own tables next.

use crate::layout::{PD_COUNT, PD_START, PDPT_START, PML4_START};

/// Present and writable.
const PRESENT_RW: u64 = 0x3;
/// Present, writable, and a 2 MiB page (PS).
const PRESENT_RW_HUGE: u64 = 0x83;
/// Entries per table.
const ENTRIES: u64 = 512;

/// The page tables as (guest address, entry) pairs, in the order they are written.
pub fn identity_tables() -> Vec<(u64, u64)> {
    let mut entries = vec![(PML4_START, PDPT_START | PRESENT_RW)];
    for gib in 0..PD_COUNT {
        let directory = PD_START + gib * 0x1000;
        entries.push((PDPT_START + gib * 8, directory | PRESENT_RW));
        for slot in 0..ENTRIES {
            let page = ((gib * ENTRIES + slot) << 21) | PRESENT_RW_HUGE;
            entries.push((directory + slot * 8, page));
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Walks the tables the way the MMU does for a 2 MiB page.
    fn translate(tables: &HashMap<u64, u64>, virtual_address: u64) -> Option<u64> {
        let pml4e = tables.get(&(PML4_START + ((virtual_address >> 39) & 0x1ff) * 8))?;
        let pdpte = tables.get(&((pml4e & !0xfff) + ((virtual_address >> 30) & 0x1ff) * 8))?;
        assert_eq!(pdpte & 0x80, 0, "no 1 GiB pages");
        let pde = tables.get(&((pdpte & !0xfff) + ((virtual_address >> 21) & 0x1ff) * 8))?;
        assert_eq!(pde & 0x83, 0x83, "present, writable, 2 MiB");
        Some((pde & !0x1f_ffff) | (virtual_address & 0x1f_ffff))
    }

    #[test]
    fn first_four_gib_map_to_themselves() {
        let tables: HashMap<u64, u64> = identity_tables().into_iter().collect();
        for address in [
            0,
            0x7000,
            0x100_0000 + 0x123,
            0xd000_0000,
            0xfee0_0300,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&tables, address), Some(address), "{address:#x}");
        }
        assert_eq!(translate(&tables, 0x1_0000_0000), None);
        assert_eq!(tables[&PML4_START], 0xa003);
        assert_eq!(tables[&PD_START], 0x83);
        assert_eq!(tables[&(PD_START + 8)], 0x20_0083);
    }
}
