//! The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI finds its CPUs,
//! its IOAPIC and how ISA interrupts are wired. Linux reads it when it finds the `_MP_`
//! floating pointer in the last KiB of base memory.
//!
//! Layout at [`MPTABLE_START`]: the 16-byte floating pointer, then the configuration
//! table: header, one processor entry per vCPU, the ISA bus, the IOAPIC, one I/O
//! interrupt entry per IOAPIC pin (ISA IRQ n → pin n) and the two local interrupts
//! (ExtINT on LINT0, NMI on LINT1). Built as bytes: no layout-dependent structs.

use crate::layout::{APIC_START, EBDA_START, HIMEM_START, IOAPIC_START, IRQ_MAX, MPTABLE_START};

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INTERRUPT_INT: u8 = 0;
const INTERRUPT_NMI: u8 = 1;
const INTERRUPT_EXTINT: u8 = 3;

const SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6, as a CPU signature.
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;

/// Errors building the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MpTableError {
    #[error("an MP table for {cpus} vCPUs does not fit below 640 KiB; use fewer vCPUs")]
    TooManyCpus { cpus: u8 },
    #[error("a guest needs at least one vCPU")]
    NoCpus,
}

/// The table as bytes to write at [`MPTABLE_START`].
pub fn mptable(cpus: u8) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 {
        return Err(MpTableError::NoCpus);
    }
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(cpu);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX as u8 {
        // Polarity and trigger "conform to the bus" (flags 0): edge, active high for ISA.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INTERRUPT_INT,
            0,
            0,
            0,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    for (kind, lint) in [(INTERRUPT_EXTINT, 0), (INTERRUPT_NMI, 1)] {
        // Destination 0xff: every local APIC.
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }

    let table_address = MPTABLE_START + FLOATING_POINTER_LEN as u64;
    let table_len = HEADER_LEN + entries.len();
    if MPTABLE_START as usize + FLOATING_POINTER_LEN + table_len > (EBDA_START + 0x400) as usize
        || table_address + table_len as u64 > HIMEM_START
    {
        return Err(MpTableError::TooManyCpus { cpus });
    }

    let mut pointer = Vec::with_capacity(FLOATING_POINTER_LEN);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&(table_address as u32).to_le_bytes());
    pointer.extend_from_slice(&[1, SPEC_REVISION, 0, 0, 0, 0, 0, 0]);
    pointer[10] = checksum(&pointer);

    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.extend_from_slice(&[SPEC_REVISION, 0]);
    table.extend_from_slice(b"GITVISOR");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&[0; 4]); // OEM table pointer
    table.extend_from_slice(&[0; 2]); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    pointer.extend_from_slice(&table);
    Ok(pointer)
}

/// The byte that makes `bytes` sum to zero (its own slot counted as zero).
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte))
    }

    #[test]
    fn pointer_and_table_checksum_to_zero_and_point_at_each_other() {
        let bytes = mptable(4).expect("fits");
        assert_eq!(&bytes[0..4], b"_MP_");
        assert_eq!(sum(&bytes[0..16]), 0);
        let physptr = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        assert_eq!(u64::from(physptr), MPTABLE_START + 16);
        let table = &bytes[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        assert_eq!(
            u32::from_le_bytes(table[36..40].try_into().expect("4 bytes")),
            0xfee0_0000
        );
    }

    #[test]
    fn one_processor_entry_per_vcpu_and_only_the_first_boots() {
        let bytes = mptable(3).expect("fits");
        let table = &bytes[16..];
        let count = u16::from_le_bytes([table[34], table[35]]);
        // 3 CPUs, bus, IOAPIC, 24 pins, 2 local interrupts.
        assert_eq!(count, 3 + 1 + 1 + 24 + 2);
        let cpus: Vec<(u8, u8)> = (0..3)
            .map(|i| {
                let entry = &table[44 + i * 20..];
                assert_eq!(entry[0], 0);
                (entry[1], entry[3])
            })
            .collect();
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1)]);
        // The IOAPIC takes the next id after the CPUs.
        let ioapic = &table[44 + 3 * 20 + 8..];
        assert_eq!((ioapic[0], ioapic[1]), (2, 3));
    }

    #[test]
    fn the_largest_guest_fits_and_larger_ones_are_refused() {
        assert!(mptable(crate::layout::MAX_VCPUS).is_ok());
        assert_eq!(mptable(0), Err(MpTableError::NoCpus));
        assert_eq!(mptable(40), Err(MpTableError::TooManyCpus { cpus: 40 }));
    }
}
