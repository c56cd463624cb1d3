//! The whole image, walked the way a guest does: RSDP → XSDT → FADT → DSDT, and the MADT.

use super::*;

fn at(tables: &AcpiTables, address: u64) -> &[u8] {
    &tables.bytes[(address - ACPI_START) as usize..]
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8"))
}

/// The table at `address`, cut to its length, with its checksum verified.
fn table<'a>(tables: &'a AcpiTables, address: u64, signature: &[u8; 4]) -> &'a [u8] {
    let bytes = at(tables, address);
    assert_eq!(&bytes[..4], signature);
    let bytes = &bytes[..u32_at(bytes, 4) as usize];
    assert_eq!(
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)),
        0,
        "{} checksum",
        String::from_utf8_lossy(signature)
    );
    bytes
}

fn devices(count: usize) -> Vec<MmioAnnouncement> {
    (0..count)
        .map(|index| {
            let (base, irq) = crate::layout::virtio_mmio_slot(index);
            MmioAnnouncement { base, irq }
        })
        .collect()
}

#[test]
fn the_walk_from_the_rsdp_reaches_every_table() {
    let tables = build(2, &devices(3)).expect("builds");
    assert_eq!(tables.rsdp, 0xe_0000);
    let rsdp = at(&tables, tables.rsdp);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp[..36].iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    let xsdt = table(&tables, u64_at(rsdp, 24), b"XSDT");
    let entries: Vec<u64> = xsdt[36..]
        .chunks(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8")))
        .collect();
    assert_eq!(entries, vec![tables.fadt, tables.madt]);
    let fadt = table(&tables, entries[0], b"FACP");
    let dsdt = table(&tables, u64_at(fadt, 140), b"DSDT");
    let lnro = dsdt.windows(8).filter(|w| *w == b"LNRO0005").count();
    assert_eq!(lnro, 3);
    let madt = table(&tables, entries[1], b"APIC");
    assert_eq!(madt.len(), 44 + 2 * 8 + 12 + 6);
    for address in [tables.dsdt, tables.fadt, tables.madt, tables.xsdt] {
        assert_eq!(address % 16, 0, "{address:#x} aligned");
    }
}

#[test]
fn the_largest_guest_fits_in_the_region_and_beyond_it_is_refused() {
    let tables = build(MAX_VCPUS, &devices(MAX_VIRTIO_DEVICES)).expect("fits");
    assert!(ACPI_START + tables.bytes.len() as u64 <= ACPI_END);
    assert_eq!(build(0, &[]), Err(AcpiError::Cpus { cpus: 0 }));
    assert_eq!(
        build(MAX_VCPUS + 1, &[]),
        Err(AcpiError::Cpus {
            cpus: MAX_VCPUS + 1
        })
    );
    assert_eq!(
        build(1, &devices(MAX_VIRTIO_DEVICES + 1)),
        Err(AcpiError::Devices {
            devices: MAX_VIRTIO_DEVICES + 1
        })
    );
}
