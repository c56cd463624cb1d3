//! The virtio-mmio register file (virtio 1.2 §4.2.2, version 2): feature negotiation,
//! queue setup, notification, interrupt status/ack, device status and the configuration
//! space at 0x100. One 4 KiB window per device, announced to Linux in the ACPI DSDT.
//!
//! Who touches what, and under which lock (the layout Firecracker's
//! `transport/mmio.rs` has, with the interrupt status shared as an atomic):
//! - the **registers** (selectors, negotiated features, device status) are the vCPUs':
//!   a `Mutex` held for one register access, never while a queue is processed;
//! - the **device and its queues** are behind a second `Mutex`, held while a queue is
//!   processed (a disk request's I/O included, on the disk's queue thread), and by a
//!   vCPU only while the driver sets queues up or resets the device;
//! - the **interrupt status** is an atomic: the device's side sets `USED_BUFFER` and
//!   raises the irqfd, the guest's interrupt handler reads and acknowledges it, neither
//!   waiting for the other (a vCPU taking the interrupt of one request while the next
//!   request's I/O runs does not wait for that I/O);
//! - the device type, features, queue sizes and configuration space are fixed when the
//!   transport is made (both devices' configuration is: a capacity, a MAC), so reading
//!   them takes no lock.
//!
//! Lock order, where both are held: registers, then device.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    F_VERSION_1, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
    VirtioDevice,
};
use crate::devices::irq::IrqLine;

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

/// "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) transport.
pub const VERSION: u32 = 2;
/// "GVSR": gitvisor's vendor id.
pub const VENDOR_ID: u32 = 0x5253_5647;
/// InterruptStatus: a used buffer was returned.
pub const INTERRUPT_VRING: u32 = 1;
/// The size of the configuration space snapshot (the register window's rest).
const CONFIG_SPACE: usize = 0x100;

/// The interrupt status register and the line it drives, shared without a lock.
pub struct Interrupt {
    status: AtomicU32,
    irq: IrqLine,
}

impl Interrupt {
    fn new(irq: IrqLine) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irq,
        }
    }

    /// Used buffers were returned: set the status bit, raise the line.
    pub fn used_buffers(&self) {
        self.status.fetch_or(INTERRUPT_VRING, Ordering::SeqCst);
        // The driver also sees the used ring; a lost edge only delays it.
        let _ = self.irq.raise();
    }

    fn read(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// What the vCPUs read and write, one access at a time.
#[derive(Default)]
struct Registers {
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
}

impl Registers {
    fn driver_ok(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_FAILED == 0
    }
}

/// The device and its queues: held while a queue is processed.
struct Active {
    device: Box<dyn VirtioDevice>,
    queues: Vec<Queue>,
}

/// One virtio-mmio device.
pub struct MmioTransport {
    device_type: u32,
    features: u64,
    queue_max_sizes: Vec<u16>,
    config: [u8; CONFIG_SPACE],
    memory: GuestMemoryMmap,
    registers: Mutex<Registers>,
    active: Mutex<Active>,
    interrupt: Interrupt,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemoryMmap,
        irq: IrqLine,
    ) -> Result<Self, virtio_queue::Error> {
        let queue_max_sizes = device.queue_max_sizes().to_vec();
        let queues = queue_max_sizes
            .iter()
            .map(|size| Queue::new(*size))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = [0u8; CONFIG_SPACE];
        device.read_config(0, &mut config);
        Ok(MmioTransport {
            device_type: device.device_type(),
            features: device.features(),
            queue_max_sizes,
            config,
            memory,
            registers: Mutex::new(Registers::default()),
            active: Mutex::new(Active { device, queues }),
            interrupt: Interrupt::new(irq),
        })
    }

    /// The device's status register.
    pub fn status(&self) -> u32 {
        lock(&self.registers).status
    }

    /// A guest read at `offset` in the register window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            let start = (offset - REG_CONFIG) as usize;
            for (index, byte) in data.iter_mut().enumerate() {
                *byte = self.config.get(start + index).copied().unwrap_or(0);
            }
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device_type,
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match lock(&self.registers).device_features_select {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => {
                let select = lock(&self.registers).queue_select as usize;
                self.queue_max_sizes
                    .get(select)
                    .map_or(0, |size| u32::from(*size))
            }
            REG_QUEUE_READY => {
                let select = lock(&self.registers).queue_select as usize;
                lock(&self.active)
                    .queues
                    .get(select)
                    .map_or(0, |queue| u32::from(queue.ready()))
            }
            REG_INTERRUPT_STATUS => self.interrupt.read(),
            REG_STATUS => lock(&self.registers).status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write at `offset` in the register window.
    pub fn write(&self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            // The two hot paths, without the register lock.
            REG_QUEUE_NOTIFY => return self.notify(value as usize),
            REG_INTERRUPT_ACK => return self.interrupt.acknowledge(value),
            _ => {}
        }
        let mut registers = lock(&self.registers);
        // Queue and feature setup is only allowed before DRIVER_OK (§4.2.3.2, §3.1.1).
        let setting_up = !registers.driver_ok();
        let select = registers.queue_select as usize;
        match offset {
            REG_DEVICE_FEATURES_SEL => registers.device_features_select = value,
            REG_DRIVER_FEATURES_SEL => registers.driver_features_select = value,
            REG_DRIVER_FEATURES if setting_up => match registers.driver_features_select {
                0 => {
                    registers.driver_features =
                        (registers.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    registers.driver_features =
                        (registers.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            REG_QUEUE_SEL => registers.queue_select = value,
            REG_QUEUE_NUM if setting_up => self.queue(select, |queue| queue.set_size(value as u16)),
            REG_QUEUE_READY if setting_up => {
                self.queue(select, |queue| queue.set_ready(value == 1))
            }
            REG_QUEUE_DESC_LOW if setting_up => self.queue(select, |queue| {
                queue.set_desc_table_address(Some(value), None)
            }),
            REG_QUEUE_DESC_HIGH if setting_up => self.queue(select, |queue| {
                queue.set_desc_table_address(None, Some(value))
            }),
            REG_QUEUE_DRIVER_LOW if setting_up => self.queue(select, |queue| {
                queue.set_avail_ring_address(Some(value), None)
            }),
            REG_QUEUE_DRIVER_HIGH if setting_up => self.queue(select, |queue| {
                queue.set_avail_ring_address(None, Some(value))
            }),
            REG_QUEUE_DEVICE_LOW if setting_up => self.queue(select, |queue| {
                queue.set_used_ring_address(Some(value), None)
            }),
            REG_QUEUE_DEVICE_HIGH if setting_up => self.queue(select, |queue| {
                queue.set_used_ring_address(None, Some(value))
            }),
            REG_STATUS => self.set_status(&mut registers, value),
            _ => {}
        }
    }

    fn queue(&self, index: usize, set: impl FnOnce(&mut Queue)) {
        if let Some(queue) = lock(&self.active).queues.get_mut(index) {
            set(queue);
        }
    }

    fn set_status(&self, registers: &mut Registers, value: u32) {
        if value == 0 {
            self.reset(registers);
            return;
        }
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && registers.status & STATUS_FEATURES_OK == 0 {
            // Refuse features the device never offered, and legacy drivers.
            if registers.driver_features & !self.features != 0
                || registers.driver_features & F_VERSION_1 == 0
            {
                value &= !STATUS_FEATURES_OK;
            }
        }
        if value & STATUS_DRIVER_OK != 0 && registers.status & STATUS_DRIVER_OK == 0 {
            let valid = lock(&self.active)
                .queues
                .iter()
                .all(|queue| !queue.ready() || queue.is_valid(&self.memory));
            if !valid {
                value |= STATUS_NEEDS_RESET;
                value &= !STATUS_DRIVER_OK;
            }
        }
        registers.status = value;
    }

    /// Resets the device; waits for a queue being processed to finish first.
    fn reset(&self, registers: &mut Registers) {
        {
            let mut active = lock(&self.active);
            active.device.reset();
            for queue in &mut active.queues {
                queue.reset();
            }
        }
        *registers = Registers::default();
        self.interrupt.clear();
    }

    fn driver_ok(&self) -> bool {
        lock(&self.registers).driver_ok()
    }

    /// The driver made buffers available on queue `index`: through the QueueNotify
    /// register (a vCPU's MMIO write) or its ioeventfd (a queue thread). Holds the
    /// device's lock, not the registers', while the queue is processed.
    pub fn notify(&self, index: usize) {
        if !self.driver_ok() {
            return;
        }
        let mut active = lock(&self.active);
        let Active { device, queues } = &mut *active;
        if index < queues.len() && device.process_queue(index, queues, &self.memory) {
            self.interrupt.used_buffers();
        }
    }

    /// Lets the device take host-side input (the event loop calls this).
    pub fn process_host(&self) {
        if !self.driver_ok() {
            return;
        }
        let mut active = lock(&self.active);
        let Active { device, queues } = &mut *active;
        if device.process_host(queues, &self.memory) {
            self.interrupt.used_buffers();
        }
    }
}

#[cfg(test)]
mod tests;
