//! virtio devices over the MMIO transport (virtio 1.2 §4.2, "modern" version 2 only).
//!
//! The transport ([`mmio::MmioTransport`]) owns the register file, the queues and the
//! interrupt status; a device ([`VirtioDevice`]) owns only its backend (a file, a tap)
//! and processes a queue when the driver notifies it, under the transport's device lock,
//! which is not the lock the vCPUs' register accesses take (the interrupt status is an
//! atomic; see [`mmio`] for who holds what).
//!
//! Where each queue is processed:
//! - a disk's request queue and a NIC's transmit queue: on a thread of their own, woken
//!   by KVM through an ioeventfd on the QueueNotify register ([`queue_worker`]: the
//!   guest's notify never leaves the kernel, and no vCPU waits for a disk or a tap);
//! - a NIC's receive queue: on the vCPU whose notify added receive buffers (it only
//!   copies frames already waiting in the tap, without blocking), and on the event loop
//!   when the tap becomes readable ([`VirtioDevice::process_host`]).

pub mod block;
pub mod mmio;
pub mod net;
pub mod queue_worker;
#[cfg(test)]
pub mod testing;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Device ids (virtio 1.2 §5).
pub const DEVICE_ID_NET: u32 = 1;
pub const DEVICE_ID_BLOCK: u32 = 2;

/// Feature bits common to every device.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2 §2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

/// A device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device id.
    fn device_type(&self) -> u32;
    /// The features offered to the driver.
    fn features(&self) -> u64;
    /// The largest size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads `data.len()` bytes of the device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver notified queue `index`: consume what it made available. True when used
    /// buffers were returned and the driver should be interrupted.
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        memory: &GuestMemoryMmap,
    ) -> bool;
    /// Host-side input may be ready (the event loop saw the backend readable). True when
    /// used buffers were returned.
    fn process_host(&mut self, _queues: &mut [Queue], _memory: &GuestMemoryMmap) -> bool {
        false
    }
    /// The driver reset the device.
    fn reset(&mut self) {}
}
