//! Queue processing off the vCPU threads, for devices whose requests block on the host
//! (block I/O): KVM signals an eventfd when the guest writes the queue's index to the
//! window's QueueNotify register (an ioeventfd, so the write does not even leave the
//! kernel), and a thread of the device's own waits on that eventfd and processes the
//! queue under the device's lock (not the registers' the vCPUs take, see
//! [`MmioTransport`]). The notifying vCPU goes back to the guest at once;
//! the guest learns of completion from the used ring and the interrupt, as on hardware.
//!
//! Order: [`QueueWorker::register`] while the VM is built (before any vCPU runs, so no
//! notification is missed), [`QueueWorker::spawn`] once the event loop has blocked the
//! signals the threads must not take.

use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::{MmioTransport, REG_QUEUE_NOTIFY};

/// Errors wiring a queue's notification.
#[derive(Debug, thiserror::Error)]
pub enum QueueWorkerError {
    #[error("cannot create the notification eventfd of queue {queue} at {base:#x}: {source}")]
    EventFd {
        base: u64,
        queue: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "KVM cannot signal queue {queue} of the virtio-mmio device at {base:#x} (ioeventfd): {source}"
    )]
    Register {
        base: u64,
        queue: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// One queue's notification eventfd and the device it drives.
pub struct QueueWorker {
    event: EventFd,
    queue: u32,
    transport: Arc<MmioTransport>,
}

impl QueueWorker {
    /// Has KVM signal a new eventfd when the guest writes `queue` to the QueueNotify
    /// register of the window at `base`.
    pub fn register(
        vm: &VmFd,
        base: u64,
        queue: u32,
        transport: Arc<MmioTransport>,
    ) -> Result<Self, QueueWorkerError> {
        let event = EventFd::new(0).map_err(|source| QueueWorkerError::EventFd {
            base,
            queue,
            source,
        })?;
        vm.register_ioevent(
            &event,
            &IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY),
            queue,
        )
        .map_err(|source| QueueWorkerError::Register {
            base,
            queue,
            source,
        })?;
        Ok(QueueWorker {
            event,
            queue,
            transport,
        })
    }

    /// Starts the thread `name` that processes the queue on each notification, for the
    /// rest of the process's life (it ends with the process, like the vCPU threads).
    pub fn spawn(self, name: String) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run())
    }

    fn run(self) {
        loop {
            match self.event.read() {
                // Several notifications may have been folded into one count: one pass
                // takes every request the guest made available.
                Ok(_) => self.transport.notify(self.queue as usize),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                // The eventfd is ours and blocking: any other error means it is unusable.
                Err(_) => return,
            }
        }
    }
}
