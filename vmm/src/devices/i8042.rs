//! An i8042 keyboard controller, as much of it as a microVM needs:
//! - the reset line: command 0xFE on port 0x64 (Linux `reboot=k`, its default on x86),
//!   or an output-port write with the reset bit low, ends the VMM with
//!   [`ExitReason::GuestReset`];
//! - Ctrl+Alt+Del: [`I8042::ctrl_alt_del`] queues the three key presses (scan code set 2,
//!   untranslated, as Linux's atkbd reads them) and raises IRQ 1: the control API's
//!   `ctrl-alt-del` (Firecracker's `SendCtrlAltDel`), for guests that do not act on the
//!   ACPI power button `shutdown` presses;
//! - enough of the controller and keyboard command set (self tests, command byte, ACKs)
//!   for Linux's i8042 and atkbd drivers to probe it.

use std::collections::VecDeque;

use super::irq::IrqLine;
use crate::exit::{ExitHandle, ExitReason};

/// The data port.
pub const DATA_PORT: u16 = 0x60;
/// The status (read) and command (write) port.
pub const COMMAND_PORT: u16 = 0x64;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;

const CONTROL_KBD_INTERRUPT: u8 = 0x01;
const CONTROL_SYSTEM: u8 = 0x04;
const CONTROL_KBD_DISABLED: u8 = 0x10;

const CMD_READ_CONTROL: u8 = 0x20;
const CMD_WRITE_CONTROL: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

const KBD_RESET: u8 = 0xff;
const KBD_GET_ID: u8 = 0xf2;
const KBD_ECHO: u8 = 0xee;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_PASSED: u8 = 0xaa;

/// Scan code set 2 make codes: left Ctrl, left Alt, Delete.
pub const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];

/// Output port bit 0: the CPU reset line, active low.
const OUTPUT_PORT_RESET: u8 = 0x01;

/// The controller's state.
pub struct I8042 {
    control: u8,
    status: u8,
    output: VecDeque<u8>,
    /// A controller command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    irq: IrqLine,
    exit: ExitHandle,
}

impl I8042 {
    pub fn new(irq: IrqLine, exit: ExitHandle) -> Self {
        I8042 {
            control: CONTROL_KBD_INTERRUPT | CONTROL_SYSTEM,
            status: STATUS_SYSTEM,
            output: VecDeque::new(),
            pending: None,
            irq,
            exit,
        }
    }

    /// Queues Ctrl+Alt+Del for the guest.
    pub fn ctrl_alt_del(&mut self) {
        for byte in CTRL_ALT_DEL {
            self.output.push_back(byte);
        }
        self.notify();
    }

    fn push(&mut self, byte: u8) {
        self.output.push_back(byte);
        self.notify();
    }

    fn notify(&self) {
        if self.control & CONTROL_KBD_INTERRUPT != 0 && !self.output.is_empty() {
            // The guest polls the status port too; a lost edge only delays it.
            let _ = self.irq.raise();
        }
    }

    /// A read of `port`.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            COMMAND_PORT => {
                let full = if self.output.is_empty() {
                    0
                } else {
                    STATUS_OUTPUT_FULL
                };
                self.status | full
            }
            DATA_PORT => {
                let byte = self.output.pop_front().unwrap_or(0);
                self.notify();
                byte
            }
            _ => 0xff,
        }
    }

    /// A write of `value` to `port`.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            COMMAND_PORT => self.command(value),
            DATA_PORT => self.data(value),
            _ => {}
        }
    }

    fn command(&mut self, command: u8) {
        self.status |= STATUS_COMMAND;
        self.pending = None;
        match command {
            CMD_READ_CONTROL => self.push(self.control),
            CMD_WRITE_CONTROL | CMD_WRITE_OUTPUT_PORT | CMD_WRITE_AUX => {
                self.pending = Some(command)
            }
            CMD_SELF_TEST => self.push(0x55),
            CMD_TEST_KBD => self.push(0x00),
            // No mouse: the aux port test reports a clock line stuck low.
            CMD_TEST_AUX => self.push(0x01),
            CMD_DISABLE_KBD => self.control |= CONTROL_KBD_DISABLED,
            CMD_ENABLE_KBD => self.control &= !CONTROL_KBD_DISABLED,
            CMD_DISABLE_AUX | CMD_ENABLE_AUX => {}
            CMD_READ_OUTPUT_PORT => self.push(OUTPUT_PORT_RESET),
            CMD_PULSE_RESET => self.exit.request(ExitReason::GuestReset),
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        self.status &= !STATUS_COMMAND;
        match self.pending.take() {
            Some(CMD_WRITE_CONTROL) => {
                self.control = value;
                self.notify();
            }
            Some(CMD_WRITE_OUTPUT_PORT) => {
                if value & OUTPUT_PORT_RESET == 0 {
                    self.exit.request(ExitReason::GuestReset);
                }
            }
            Some(_) => {}
            None => match value {
                KBD_RESET => {
                    self.push(KBD_ACK);
                    self.push(KBD_SELF_TEST_PASSED);
                }
                KBD_GET_ID => {
                    self.push(KBD_ACK);
                    self.push(0xab);
                    self.push(0x83);
                }
                KBD_ECHO => self.push(KBD_ECHO),
                _ => self.push(KBD_ACK),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> (I8042, IrqLine, ExitHandle) {
        let irq = IrqLine::new().expect("eventfd");
        let exit = ExitHandle::new().expect("eventfd");
        (I8042::new(irq.clone(), exit.clone()), irq, exit)
    }

    #[test]
    fn pulse_reset_ends_the_vm_as_a_guest_reset() {
        let (mut i8042, _, exit) = controller();
        i8042.write(COMMAND_PORT, 0xfe);
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
    }

    #[test]
    fn an_output_port_write_resets_only_with_the_reset_bit_low() {
        let (mut i8042, _, exit) = controller();
        i8042.write(COMMAND_PORT, CMD_WRITE_OUTPUT_PORT);
        i8042.write(DATA_PORT, 0x03);
        assert!(!exit.requested());
        i8042.write(COMMAND_PORT, CMD_WRITE_OUTPUT_PORT);
        i8042.write(DATA_PORT, 0x02);
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
    }

    #[test]
    fn ctrl_alt_del_is_read_back_in_order_with_an_interrupt() {
        let (mut i8042, irq, _) = controller();
        assert_eq!(i8042.read(COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        i8042.ctrl_alt_del();
        assert!(irq.event().read().is_ok(), "IRQ 1 raised");
        let mut got = Vec::new();
        while i8042.read(COMMAND_PORT) & STATUS_OUTPUT_FULL != 0 {
            got.push(i8042.read(DATA_PORT));
        }
        assert_eq!(got, CTRL_ALT_DEL);
    }

    #[test]
    fn probes_get_the_answers_linux_expects() {
        let (mut i8042, _, _) = controller();
        i8042.write(COMMAND_PORT, CMD_SELF_TEST);
        assert_eq!(i8042.read(DATA_PORT), 0x55);
        i8042.write(COMMAND_PORT, CMD_READ_CONTROL);
        let control = i8042.read(DATA_PORT);
        i8042.write(COMMAND_PORT, CMD_WRITE_CONTROL);
        i8042.write(DATA_PORT, control & !CONTROL_KBD_INTERRUPT);
        i8042.write(COMMAND_PORT, CMD_READ_CONTROL);
        assert_eq!(i8042.read(DATA_PORT), control & !CONTROL_KBD_INTERRUPT);
        i8042.write(DATA_PORT, KBD_GET_ID);
        assert_eq!(
            [
                i8042.read(DATA_PORT),
                i8042.read(DATA_PORT),
                i8042.read(DATA_PORT)
            ],
            [KBD_ACK, 0xab, 0x83]
        );
    }
}
