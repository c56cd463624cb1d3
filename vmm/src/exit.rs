//! Why the VMM process ends, and how a vCPU thread, a device or the event loop asks for
//! it: the first reason recorded wins, and an eventfd wakes the main thread's event loop,
//! which returns it; the VM then kicks and joins its vCPU threads (whose loops also stop
//! on [`ExitHandle::requested`]) and the process exits.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// Why the VMM stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine through the i8042 (Linux `reboot=k`, the default).
    GuestReset,
    /// The guest triple-faulted (Linux `reboot=t`, or a crash).
    TripleFault,
    /// The guest powered off: ACPI S5 through the sleep control register (`poweroff`).
    GuestPowerOff,
    /// The guest reset the machine through the ACPI reset register.
    GuestAcpiReset,
    /// The guest asked KVM to shut down or reset (`KVM_SYSTEM_EVENT`).
    GuestSystemEvent { kind: u32 },
    /// `stop` over the control API.
    Stopped,
    /// SIGTERM, SIGINT or SIGHUP.
    Signal { signal: String },
    /// A vCPU hit something the VMM cannot handle.
    VcpuFailed { vcpu: u8, message: String },
}

impl ExitReason {
    /// The process exit status: 0 for guest-initiated ends and requested stops, 1 for
    /// failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::VcpuFailed { .. } => 1,
            _ => 0,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::GuestReset => write!(f, "the guest reset the machine (i8042)"),
            ExitReason::TripleFault => write!(f, "the guest triple-faulted (reset or crash)"),
            ExitReason::GuestPowerOff => write!(f, "the guest powered off (ACPI S5)"),
            ExitReason::GuestAcpiReset => {
                write!(f, "the guest reset the machine (ACPI reset register)")
            }
            ExitReason::GuestSystemEvent { kind } => {
                write!(f, "the guest requested a system event ({kind})")
            }
            ExitReason::Stopped => write!(f, "stopped over the control API"),
            ExitReason::Signal { signal } => write!(f, "received {signal}"),
            ExitReason::VcpuFailed { vcpu, message } => write!(f, "vCPU {vcpu} failed: {message}"),
        }
    }
}

/// Shared by the vCPU threads, the devices and the event loop.
#[derive(Clone)]
pub struct ExitHandle {
    requested: Arc<AtomicBool>,
    reason: Arc<Mutex<Option<ExitReason>>>,
    event: Arc<EventFd>,
}

impl ExitHandle {
    pub fn new() -> std::io::Result<Self> {
        let event =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(std::io::Error::from)?;
        Ok(ExitHandle {
            requested: Arc::new(AtomicBool::new(false)),
            reason: Arc::new(Mutex::new(None)),
            event: Arc::new(event),
        })
    }

    /// Records `reason` unless one is already recorded, and wakes the event loop.
    pub fn request(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.requested.store(true, Ordering::SeqCst);
        // A full eventfd counter still wakes the loop; nothing else can fail here.
        let _ = self.event.write(1);
    }

    /// Whether an exit was requested.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The recorded reason.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The eventfd the event loop waits on.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_and_wakes_the_loop() {
        let exit = ExitHandle::new().expect("eventfd");
        assert!(!exit.requested());
        exit.request(ExitReason::GuestReset);
        exit.request(ExitReason::Stopped);
        assert!(exit.requested());
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
        assert_eq!(exit.event().read().expect("readable"), 2);
        assert_eq!(ExitReason::GuestReset.exit_code(), 0);
        assert_eq!(
            ExitReason::VcpuFailed {
                vcpu: 0,
                message: String::new()
            }
            .exit_code(),
            1
        );
    }
}
