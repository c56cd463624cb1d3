//! The ACPI Generic Event Device (ACPI 6.5 §5.6.9): how a hardware-reduced machine (no
//! SCI, no fixed power button, see [`crate::acpi::fadt`]) tells the guest's ACPI code that
//! something happened. Here the one event is a power button press.
//!
//! The pieces, and where each lives:
//! - the DSDT ([`crate::acpi::dsdt`]) declares `\_SB.GED0` (`ACPI0013`) with one
//!   edge-triggered interrupt, [`GED_IRQ`], and `\_SB.PWRB` (`PNP0C0C`, a control-method
//!   power button); `GED0._EVT` reads the event register and, for [`EVENT_POWER_BUTTON`],
//!   does `Notify (\_SB.PWRB, 0x80)`;
//! - this device is the event register, an I/O port ([`GED_EVENT_PORT`]): reading it
//!   returns the pending events and clears them; [`Ged::press_power_button`] records the
//!   event and raises the interrupt (an irqfd, so from any thread, with no vCPU lock).
//!
//! What the guest must run for a press to power it off: Linux's GED driver (`evged`,
//! built in with ACPI) runs `_EVT`; the ACPI button driver (`button`, a module in
//! Debian's kernel) turns the notify into a `KEY_POWER` input event (on
//! `/dev/input/event*`, through `evdev`, also a module in Debian) and an ACPI netlink
//! event; something in user space then acts on it: systemd-logind does by default, and
//! busybox `acpid` does (it runs `/etc/acpi/PWRF/*` or the `/etc/acpid.conf` action for
//! `PWRF`, e.g. `poweroff`). A guest with none of these ignores the press: that is why
//! the control API keeps `ctrl-alt-del` too, and why the reconciler forces the stop after
//! `shutdownTimeout`.

use std::sync::atomic::{AtomicU8, Ordering};

use super::irq::IrqLine;
use crate::layout::GED_EVENT_PORT;
#[cfg(doc)]
use crate::layout::GED_IRQ;

/// The event bit of a power button press, as `_EVT` tests it.
pub const EVENT_POWER_BUTTON: u8 = 1;

/// The Generic Event Device: pending events and the interrupt that announces them.
pub struct Ged {
    events: AtomicU8,
    irq: IrqLine,
}

impl Ged {
    /// A device raising `irq` (registered with KVM for [`GED_IRQ`]).
    pub fn new(irq: IrqLine) -> Self {
        Ged {
            events: AtomicU8::new(0),
            irq,
        }
    }

    /// Whether `port` is the event register.
    pub fn handles(port: u16) -> bool {
        port == GED_EVENT_PORT
    }

    /// Presses the power button: records the event and interrupts the guest.
    pub fn press_power_button(&self) -> std::io::Result<()> {
        self.events.fetch_or(EVENT_POWER_BUTTON, Ordering::SeqCst);
        self.irq.raise()
    }

    /// A guest read of the event register: the pending events, which are cleared.
    pub fn read(&self) -> u8 {
        self.events.swap(0, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_is_read_once_and_raises_the_interrupt() {
        let irq = IrqLine::new().expect("eventfd");
        let ged = Ged::new(irq.clone());
        assert_eq!(ged.read(), 0);
        assert!(irq.event().read().is_err(), "no interrupt before a press");
        ged.press_power_button().expect("raise");
        assert_eq!(irq.event().read().expect("interrupt raised"), 1);
        assert_eq!(ged.read(), EVENT_POWER_BUTTON);
        assert_eq!(ged.read(), 0, "reading clears the event");
        assert!(Ged::handles(0x603) && !Ged::handles(0x602));
    }
}
