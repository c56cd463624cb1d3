//! Where things live in the guest's physical address space and which interrupt lines the
//! devices use. One table, so the boot code, the e820 map, the MP table and the device bus
//! agree.
//!
//! ```text
//! 0x0000_0500  GDT                         0x0000_0540  IDT (empty)
//! 0x0000_7000  zero page (boot_params)     0x0000_8ff0  boot stack (grows down)
//! 0x0000_9000  PML4                        0x0000_a000  PDPT
//! 0x0000_b000  4 page directories: 2 MiB pages identity-mapping the first 4 GiB
//! 0x0002_0000  kernel command line         0x0009_fc00  MP table (EBDA, below 640 KiB)
//! 0x000e_0000  ACPI tables: RSDP, DSDT, FADT, MADT, XSDT (e820 reserved, up to 1 MiB)
//! 0x0010_0000  high memory: the kernel (bzImage at 1 MiB, an ELF where its headers say)
//! ...          the initrd, page-aligned, at the top of low memory
//! 0xc000_0000  MMIO hole up to 4 GiB: virtio-mmio devices at 0xd000_0000, IOAPIC, LAPIC
//! 0x1_0000_0000  the rest of the guest's RAM when it is larger than 3 GiB
//! ```
//!
//! I/O ports: COM1 0x3f8–0x3ff, i8042 0x60 and 0x64, the ACPI sleep control, sleep
//! status and reset registers 0x600–0x602, the GED's event register 0x603.

/// The GDT the vCPUs start with.
pub const GDT_START: u64 = 0x500;
/// An empty IDT: the kernel installs its own before it enables interrupts.
pub const IDT_START: u64 = 0x540;
/// The Linux zero page (`struct boot_params`), passed in `%rsi`.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// The initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level 4 page map.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT_START: u64 = 0xa000;
/// The first of [`PD_COUNT`] page directories.
pub const PD_START: u64 = 0xb000;
/// Page directories: one per GiB identity-mapped.
pub const PD_COUNT: u64 = 4;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// `COMMAND_LINE_SIZE` on x86: longer command lines are truncated by the kernel.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// The extended BIOS data area, where the MP table goes; usable RAM below it.
pub const EBDA_START: u64 = 0x9_fc00;
/// The MP floating pointer structure, followed by the MP configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// The ACPI tables, RSDP first: Linux's legacy RSDP scan covers 0xE0000–0xFFFFF.
pub const ACPI_START: u64 = 0xe_0000;
/// Start of high memory: kernels are loaded at or above it.
pub const HIMEM_START: u64 = 0x10_0000;
/// End of the ACPI region (reserved in the e820 map from [`ACPI_START`]).
pub const ACPI_END: u64 = HIMEM_START;
/// Start of the MMIO hole below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The first virtio-mmio device's registers; the next ones follow every [`VIRTIO_MMIO_SIZE`].
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// The register window of one virtio-mmio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC's registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs' registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's TSS: three pages the guest never sees, inside the MMIO hole.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// ACPI sleep control register (FADT `SLEEP_CONTROL_REG`, hardware-reduced ACPI): the
/// guest writes `SLP_TYP` and `SLP_EN` here to power off.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI sleep status register (FADT `SLEEP_STATUS_REG`).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register (FADT `RESET_REG`).
pub const ACPI_RESET_PORT: u16 = 0x602;
/// The Generic Event Device's event register ([`crate::devices::ged`]): the DSDT's `_EVT`
/// reads (and so clears) the pending events here.
pub const GED_EVENT_PORT: u16 = 0x603;

/// ISA IRQ of the first serial port (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// ISA IRQ of the i8042 keyboard port.
pub const I8042_IRQ: u32 = 1;
/// The Generic Event Device's interrupt (COM2's ISA IRQ, unused here).
pub const GED_IRQ: u32 = 3;
/// IRQ of the first virtio-mmio device; the next ones count up.
pub const VIRTIO_IRQ_START: u32 = 5;
/// The highest IOAPIC pin (KVM's IOAPIC has 24).
pub const IRQ_MAX: u32 = 23;

/// The most vCPUs a guest may have: the MP table must fit below 640 KiB (the MADT has
/// room to spare).
pub const MAX_VCPUS: u8 = 32;
/// The most virtio-mmio devices: one IOAPIC pin each, from [`VIRTIO_IRQ_START`].
pub const MAX_VIRTIO_DEVICES: usize = (IRQ_MAX - VIRTIO_IRQ_START + 1) as usize;

// The fixed structures do not overlap (checked when the crate compiles).
const _: () = {
    assert!(GDT_START + 5 * 8 <= IDT_START);
    assert!(ZERO_PAGE_START + 4096 <= BOOT_STACK_POINTER);
    assert!(PML4_START >= BOOT_STACK_POINTER);
    assert!(PD_START + PD_COUNT * 4096 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(EBDA_START + 0x400 <= ACPI_START);
    assert!(ACPI_START.is_multiple_of(16) && ACPI_END <= HIMEM_START);
};

/// Guest RAM regions for `size` bytes of memory: below the MMIO hole, and the rest above
/// 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

/// The end of RAM below the MMIO hole.
pub fn low_memory_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

/// The register window and IRQ of the `index`th virtio-mmio device.
pub fn virtio_mmio_slot(index: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE,
        VIRTIO_IRQ_START + index as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_have_one_region_large_ones_skip_the_hole() {
        assert_eq!(ram_regions(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(
            ram_regions(4 << 30),
            vec![(0, 0xc000_0000), (0x1_0000_0000, 1 << 30)]
        );
        assert_eq!(low_memory_end(4 << 30), 0xc000_0000);
    }

    #[test]
    fn the_last_virtio_slot_ends_below_the_ioapic() {
        let (last, irq) = virtio_mmio_slot(MAX_VIRTIO_DEVICES - 1);
        assert!(last + VIRTIO_MMIO_SIZE <= IOAPIC_START);
        assert_eq!(irq, IRQ_MAX);
    }
}
