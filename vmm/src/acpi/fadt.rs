//! The Fixed ACPI Description Table (ACPI 6.5 §5.2.9), revision 6, for a
//! hardware-reduced machine (§4.1): no PM1/GPE blocks, no PM timer, no SCI, no fixed
//! power button. What the guest gets from it:
//! - `X_DSDT`: where the DSDT is (the 32-bit `DSDT` field stays 0);
//! - the sleep control and status registers (I/O ports, 8 bits): Linux powers off (S5)
//!   by writing `SLP_TYP << 2 | SLP_EN` to the control register, with `SLP_TYP` from the
//!   DSDT's `\_S5` package, and only offers S5 when both registers are set;
//! - the reset register and value (`RESET_REG_SUP`): `reboot` without `reboot=k` resets
//!   through it (Linux tries ACPI first on x86);
//! - boot architecture flags: an i8042 is present (so Linux's i8042 driver keeps probing
//!   it: it carries Ctrl+Alt+Del), no VGA, no CMOS RTC, no MSI (no PCI).
//!
//! The registers are handled by [`crate::devices::acpi_pm`].

use super::sdt::Sdt;
use crate::layout::{ACPI_RESET_PORT, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT};

/// Length of a revision 6 FADT.
pub const LEN: usize = 276;
/// FADT major and minor revision: ACPI 6.5.
pub const REVISION: u8 = 6;
pub const MINOR_REVISION: u8 = 5;

/// Field offsets (§5.2.9, Table 5.9).
pub const IAPC_BOOT_ARCH_OFFSET: usize = 109;
pub const FLAGS_OFFSET: usize = 112;
pub const RESET_REG_OFFSET: usize = 116;
pub const RESET_VALUE_OFFSET: usize = 128;
pub const MINOR_REVISION_OFFSET: usize = 131;
pub const X_DSDT_OFFSET: usize = 140;
pub const SLEEP_CONTROL_REG_OFFSET: usize = 244;
pub const SLEEP_STATUS_REG_OFFSET: usize = 256;
pub const HYPERVISOR_VENDOR_OFFSET: usize = 268;

/// IA-PC boot architecture flags.
pub const BOOT_ARCH_8042: u16 = 1 << 1;
pub const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
pub const BOOT_ARCH_NO_MSI: u16 = 1 << 3;
pub const BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;

/// Fixed feature flags: buttons are not fixed features, the reset register is valid, the
/// hardware is reduced.
pub const FLAG_PWR_BUTTON: u32 = 1 << 4;
pub const FLAG_SLP_BUTTON: u32 = 1 << 5;
pub const FLAG_RESET_REG_SUP: u32 = 1 << 10;
pub const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

/// The value Linux writes to the reset register.
pub const RESET_VALUE: u8 = 0x1;
/// `SLP_TYP` of S5 (soft off), as the DSDT's `\_S5` package says.
pub const SLP_TYP_S5: u8 = 5;
/// The sleep control register's fields: `SLP_TYP` in bits 2–4, `SLP_EN` bit 5.
pub const SLP_TYP_SHIFT: u8 = 2;
pub const SLP_TYP_MASK: u8 = 0x7;
pub const SLP_EN: u8 = 1 << 5;

/// Generic Address Structure address space: system I/O.
const SPACE_SYSTEM_IO: u8 = 1;
/// GAS access size: byte.
const ACCESS_BYTE: u8 = 1;

/// A Generic Address Structure (§5.2.3.2) for an 8-bit I/O port.
pub fn io_port_register(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[0] = SPACE_SYSTEM_IO;
    gas[1] = 8; // register bit width
    gas[2] = 0; // bit offset
    gas[3] = ACCESS_BYTE;
    gas[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

/// The FADT of a guest whose DSDT is at `dsdt`.
pub fn fadt(dsdt: u64) -> Vec<u8> {
    let mut body = [0u8; LEN - super::sdt::HEADER_LEN];
    let at = |offset: usize| offset - super::sdt::HEADER_LEN;
    let mut put = |offset: usize, bytes: &[u8]| {
        body[at(offset)..at(offset) + bytes.len()].copy_from_slice(bytes);
    };
    let boot_arch = BOOT_ARCH_8042 | BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_MSI | BOOT_ARCH_NO_CMOS_RTC;
    put(IAPC_BOOT_ARCH_OFFSET, &boot_arch.to_le_bytes());
    let flags = FLAG_PWR_BUTTON | FLAG_SLP_BUTTON | FLAG_RESET_REG_SUP | FLAG_HW_REDUCED_ACPI;
    put(FLAGS_OFFSET, &flags.to_le_bytes());
    put(RESET_REG_OFFSET, &io_port_register(ACPI_RESET_PORT));
    put(RESET_VALUE_OFFSET, &[RESET_VALUE]);
    put(MINOR_REVISION_OFFSET, &[MINOR_REVISION]);
    put(X_DSDT_OFFSET, &dsdt.to_le_bytes());
    put(
        SLEEP_CONTROL_REG_OFFSET,
        &io_port_register(ACPI_SLEEP_CONTROL_PORT),
    );
    put(
        SLEEP_STATUS_REG_OFFSET,
        &io_port_register(ACPI_SLEEP_STATUS_PORT),
    );
    put(HYPERVISOR_VENDOR_OFFSET, b"GITVISOR");

    let mut table = Sdt::new(*b"FACP", REVISION, *b"GVMMFACP");
    table.extend(&body);
    table.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4"))
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8"))
    }

    /// Offsets are Table 5.9's, written out here rather than taken from the constants.
    #[test]
    fn fields_sit_at_the_offsets_of_the_spec() {
        let bytes = fadt(0xe_0100);
        assert_eq!(bytes.len(), 276);
        assert_eq!(&bytes[0..4], b"FACP");
        assert_eq!(u32_at(&bytes, 4), 276);
        assert_eq!(bytes[8], 6, "major revision");
        assert_eq!(bytes[131], 5, "minor revision");
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(u32_at(&bytes, 40), 0, "32-bit DSDT unused");
        assert_eq!(u64_at(&bytes, 140), 0xe_0100, "X_DSDT");
        assert_eq!(u16_at(&bytes, 46), 0, "no SCI");
        assert_eq!(u32_at(&bytes, 64), 0, "no PM1a control block");
        assert_eq!(u16_at(&bytes, 109), 0b10_1110, "IAPC_BOOT_ARCH");
        let flags = u32_at(&bytes, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // Reset register: system I/O, 8 bits, byte access, port 0x602; value 1.
        assert_eq!(&bytes[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(&bytes, 120), 0x602);
        assert_eq!(bytes[128], 1);
        assert_eq!(&bytes[244..248], &[1, 8, 0, 1], "sleep control");
        assert_eq!(u64_at(&bytes, 248), 0x600);
        assert_eq!(&bytes[256..260], &[1, 8, 0, 1], "sleep status");
        assert_eq!(u64_at(&bytes, 260), 0x601);
        assert_eq!(&bytes[268..276], b"GITVISOR");
    }

    #[test]
    fn the_s5_write_is_what_linux_computes() {
        // acpi_hw_extended_sleep: (SLP_TYP << 2) & 0x1c | SLP_EN (0x20).
        assert_eq!((SLP_TYP_S5 << SLP_TYP_SHIFT) | SLP_EN, 0x34);
    }
}
