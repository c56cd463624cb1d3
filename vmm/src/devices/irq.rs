//! An interrupt line: an eventfd registered with KVM as an irqfd, so raising it from any
//! thread injects the IRQ into the in-kernel IOAPIC/PIC without a vCPU exit.

use std::sync::Arc;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// One edge-triggered interrupt line.
#[derive(Clone)]
pub struct IrqLine {
    event: Arc<EventFd>,
}

impl IrqLine {
    pub fn new() -> std::io::Result<Self> {
        Ok(IrqLine {
            event: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        })
    }

    /// Raises the line.
    pub fn raise(&self) -> std::io::Result<()> {
        self.event.write(1)
    }

    /// The eventfd, for registering with KVM (or, in tests, for reading).
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.raise()
    }
}
