//! ACPI tables, so a stock distribution kernel finds its CPUs, its interrupt controllers
//! and the virtio-mmio devices, and can power off and reset the machine.
//!
//! Distribution kernels (Debian's among them) are built without
//! `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so the `virtio_mmio.device=` command-line entries
//! are lost on them; they find virtio-mmio devices the way Firecracker and QEMU's microvm
//! announce them: a DSDT listing `LNRO0005` devices. The machine is hardware-reduced ACPI
//! (no PM1/GPE blocks, no SCI): the FADT names a sleep control register for `poweroff`
//! and a reset register for `reboot`, both I/O ports of [`crate::devices::acpi_pm`]; the
//! power button is a Generic Event Device in the DSDT, with an interrupt of its own
//! ([`crate::devices::ged`]).
//!
//! Order of steps in [`build`], one contiguous image written at
//! [`ACPI_START`](crate::layout::ACPI_START):
//! 1. the RSDP at the start (16-byte aligned, in the range Linux scans), pointing at
//! 2. the DSDT ([`dsdt`]), then the FADT ([`fadt`]) pointing at the DSDT, the MADT
//!    ([`madt`]), and the XSDT ([`xsdt`]) listing the FADT and the MADT, each table
//!    16-byte aligned and checksummed ([`sdt`]).
//!
//! The boot code writes the image, marks its region reserved in the e820 map and puts
//! the RSDP's address in the zero page (`acpi_rsdp_addr`).

pub mod aml;
pub mod dsdt;
pub mod fadt;
pub mod madt;
pub mod rsdp;
pub mod sdt;
pub mod xsdt;

use crate::boot::MmioAnnouncement;
use crate::layout::{ACPI_END, ACPI_START, MAX_VCPUS, MAX_VIRTIO_DEVICES};

/// Errors building the tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("ACPI tables for {cpus} vCPUs: a guest has 1 to {MAX_VCPUS}")]
    Cpus { cpus: u8 },
    #[error(
        "ACPI tables for {devices} virtio-mmio devices: a guest has room for {MAX_VIRTIO_DEVICES}; use fewer disks and NICs"
    )]
    Devices { devices: usize },
    #[error(
        "the ACPI tables take {size} bytes, the region at {ACPI_START:#x} holds {room}; use fewer vCPUs or devices"
    )]
    TooLarge { size: usize, room: u64 },
}

/// The tables, as the bytes to write at [`ACPI_START`] and where each one landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    pub bytes: Vec<u8>,
    pub rsdp: u64,
    pub dsdt: u64,
    pub fadt: u64,
    pub madt: u64,
    pub xsdt: u64,
}

/// Alignment of each table in the image.
const ALIGN: usize = 16;

/// Appends `table` to `image` at the next aligned offset; returns its guest address.
fn place(image: &mut Vec<u8>, table: &[u8]) -> u64 {
    image.resize(image.len().next_multiple_of(ALIGN), 0);
    let address = ACPI_START + image.len() as u64;
    image.extend_from_slice(table);
    address
}

/// The tables for `cpus` vCPUs and the virtio-mmio `devices`.
pub fn build(cpus: u8, devices: &[MmioAnnouncement]) -> Result<AcpiTables, AcpiError> {
    if cpus == 0 || cpus > MAX_VCPUS {
        return Err(AcpiError::Cpus { cpus });
    }
    if devices.len() > MAX_VIRTIO_DEVICES {
        return Err(AcpiError::Devices {
            devices: devices.len(),
        });
    }
    // The RSDP's slot first; it is written last, once the XSDT's address is known.
    let mut image = vec![0u8; rsdp::LEN];
    let dsdt = place(&mut image, &dsdt::dsdt(devices));
    let fadt = place(&mut image, &fadt::fadt(dsdt));
    let madt = place(&mut image, &madt::madt(cpus));
    let xsdt = place(&mut image, &xsdt::xsdt(&[fadt, madt]));
    image[..rsdp::LEN].copy_from_slice(&rsdp::rsdp(xsdt));
    let room = ACPI_END - ACPI_START;
    if image.len() as u64 > room {
        return Err(AcpiError::TooLarge {
            size: image.len(),
            room,
        });
    }
    Ok(AcpiTables {
        bytes: image,
        rsdp: ACPI_START,
        dsdt,
        fadt,
        madt,
        xsdt,
    })
}

#[cfg(test)]
mod tests;
