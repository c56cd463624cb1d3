//! The hardware-reduced ACPI registers the FADT names (see [`crate::acpi::fadt`]), three
//! I/O ports:
//! - sleep control: a write with `SLP_EN` and the S5 `SLP_TYP` (what Linux's `poweroff`
//!   does last) ends the VMM with [`ExitReason::GuestPowerOff`]; other sleep states are
//!   not offered (the DSDT has only `\_S5`) and are ignored;
//! - sleep status: reads 0 (no wake event pending);
//! - reset: writing the FADT's reset value ends the VMM with [`ExitReason::GuestAcpiReset`]
//!   (`reboot` on a kernel that resets through ACPI, Linux's first choice on x86).

use crate::acpi::fadt::{RESET_VALUE, SLP_EN, SLP_TYP_MASK, SLP_TYP_S5, SLP_TYP_SHIFT};
use crate::exit::{ExitHandle, ExitReason};
use crate::layout::{ACPI_RESET_PORT, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT};

/// The power-management registers; stateless but for the exit they request.
pub struct AcpiPm {
    exit: ExitHandle,
}

impl AcpiPm {
    pub fn new(exit: ExitHandle) -> Self {
        AcpiPm { exit }
    }

    /// Whether `port` is one of the registers.
    pub fn handles(port: u16) -> bool {
        matches!(
            port,
            ACPI_SLEEP_CONTROL_PORT | ACPI_SLEEP_STATUS_PORT | ACPI_RESET_PORT
        )
    }

    pub fn read(&self, _port: u16) -> u8 {
        0
    }

    pub fn write(&self, port: u16, value: u8) {
        match port {
            ACPI_SLEEP_CONTROL_PORT
                if value & SLP_EN != 0 && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == SLP_TYP_S5 =>
            {
                self.exit.request(ExitReason::GuestPowerOff)
            }
            ACPI_RESET_PORT if value == RESET_VALUE => {
                self.exit.request(ExitReason::GuestAcpiReset)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s5_write_powers_off_and_nothing_else_does() {
        for value in [0x00, 0x14, 0x20, 0x24, 0x3c] {
            let exit = ExitHandle::new().expect("eventfd");
            AcpiPm::new(exit.clone()).write(ACPI_SLEEP_CONTROL_PORT, value);
            assert!(!exit.requested(), "{value:#x}");
        }
        let exit = ExitHandle::new().expect("eventfd");
        AcpiPm::new(exit.clone()).write(ACPI_SLEEP_CONTROL_PORT, 0x34);
        assert_eq!(exit.reason(), Some(ExitReason::GuestPowerOff));
    }

    #[test]
    fn the_reset_value_resets_and_the_status_reads_clear() {
        let exit = ExitHandle::new().expect("eventfd");
        let pm = AcpiPm::new(exit.clone());
        pm.write(ACPI_RESET_PORT, 0x2);
        pm.write(ACPI_SLEEP_STATUS_PORT, 0x1);
        assert!(!exit.requested());
        assert_eq!(pm.read(ACPI_SLEEP_STATUS_PORT), 0);
        pm.write(ACPI_RESET_PORT, 0x1);
        assert_eq!(exit.reason(), Some(ExitReason::GuestAcpiReset));
        assert!(AcpiPm::handles(0x600) && AcpiPm::handles(0x602));
        assert!(!AcpiPm::handles(0x603) && !AcpiPm::handles(0x5ff));
    }
}
