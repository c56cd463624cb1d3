//! The Multiple APIC Description Table (ACPI 6.5 §5.2.12): the guest's CPUs and
//! interrupt controllers, the ACPI counterpart of the MP table (`crate::boot::mptable`)
//! and consistent with it.
//!
//! Entries: one Processor Local APIC per vCPU (processor UID = APIC ID = the vCPU index,
//! as CPUID leaf 1 reports), the IOAPIC (its ID after the CPUs', GSIs from 0), and LINT1
//! as NMI on every processor (the vCPUs' LAPICs are set up so).
//!
//! No interrupt source overrides: KVM's default GSI routing sends GSI n to IOAPIC pin n
//! for all 24 pins, which is exactly the ACPI default for ISA IRQs without an override
//! (IRQ n = GSI n, edge, active high). The customary IRQ 0 → GSI 2 override would be
//! wrong for KVM's in-kernel PIT, which raises GSI 0 (and a hardware-reduced guest does
//! not use the PIT anyway). `PCAT_COMPAT` is set: KVM emulates the 8259 pair.

use super::sdt::Sdt;
use crate::layout::{APIC_START, IOAPIC_START};

/// MADT revision (ACPI 6.3 layout, which iasl and Linux know).
pub const REVISION: u8 = 5;
/// Flags: the system also has dual 8259s.
pub const PCAT_COMPAT: u32 = 1;

pub const ENTRY_LOCAL_APIC: u8 = 0;
pub const ENTRY_IOAPIC: u8 = 1;
pub const ENTRY_LOCAL_APIC_NMI: u8 = 4;
/// Local APIC flags: enabled.
pub const LOCAL_APIC_ENABLED: u32 = 1;
/// Processor UID meaning "all processors".
const ALL_PROCESSORS: u8 = 0xff;

/// The MADT for `cpus` vCPUs.
pub fn madt(cpus: u8) -> Vec<u8> {
    let mut table = Sdt::new(*b"APIC", REVISION, *b"GVMMAPIC");
    table.u32(APIC_START as u32);
    table.u32(PCAT_COMPAT);
    for cpu in 0..cpus {
        table.extend(&[ENTRY_LOCAL_APIC, 8, cpu, cpu]);
        table.u32(LOCAL_APIC_ENABLED);
    }
    // IOAPIC: ID, reserved, address, global system interrupt base.
    table.extend(&[ENTRY_IOAPIC, 12, cpus, 0]);
    table.u32(IOAPIC_START as u32);
    table.u32(0);
    // Local APIC NMI: all processors, flags "conforms to the bus", LINT1.
    table.extend(&[ENTRY_LOCAL_APIC_NMI, 6, ALL_PROCESSORS]);
    table.u16(0);
    table.push(1);
    table.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4"))
    }

    /// The entries after the 44-byte fixed part, as (type, bytes).
    fn entries(bytes: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        let mut offset = 44;
        while offset < bytes.len() {
            let len = usize::from(bytes[offset + 1]);
            out.push((bytes[offset], &bytes[offset..offset + len]));
            offset += len;
        }
        assert_eq!(offset, bytes.len(), "entries end at the table's end");
        out
    }

    #[test]
    fn one_local_apic_per_vcpu_then_the_ioapic_and_the_nmi() {
        let bytes = madt(3);
        assert_eq!(&bytes[0..4], b"APIC");
        assert_eq!(u32_at(&bytes, 4) as usize, bytes.len());
        assert_eq!(bytes.len(), 44 + 3 * 8 + 12 + 6);
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(u32_at(&bytes, 36), 0xfee0_0000, "local APIC address");
        assert_eq!(u32_at(&bytes, 40), 1, "PCAT_COMPAT");
        let entries = entries(&bytes);
        assert_eq!(entries.len(), 5);
        for (cpu, (kind, entry)) in entries[..3].iter().enumerate() {
            assert_eq!(*kind, 0);
            assert_eq!(entry.len(), 8);
            assert_eq!((entry[2], entry[3]), (cpu as u8, cpu as u8), "UID, APIC ID");
            assert_eq!(u32_at(entry, 4), 1, "enabled");
        }
        let (kind, ioapic) = entries[3];
        assert_eq!((kind, ioapic.len(), ioapic[2]), (1, 12, 3));
        assert_eq!(u32_at(ioapic, 4), 0xfec0_0000);
        assert_eq!(u32_at(ioapic, 8), 0, "GSI base");
        assert_eq!(entries[4], (4, &[4u8, 6, 0xff, 0, 0, 1][..]));
        assert!(entries.iter().all(|(kind, _)| *kind != 2), "no overrides");
    }

    #[test]
    fn the_largest_guest_has_all_its_cpus() {
        let bytes = madt(crate::layout::MAX_VCPUS);
        let cpus = entries(&bytes)
            .iter()
            .filter(|(kind, _)| *kind == 0)
            .count();
        assert_eq!(cpus, usize::from(crate::layout::MAX_VCPUS));
    }
}
