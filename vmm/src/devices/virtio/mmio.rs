//! The virtio-mmio register file (virtio 1.2 §4.2.2, version 2): feature negotiation,
//! queue setup, notification, interrupt status/ack, device status and the configuration
//! space at 0x100. One 4 KiB window per device, announced to Linux in the ACPI DSDT.

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

/// One virtio-mmio device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    memory: GuestMemoryMmap,
    irq: IrqLine,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemoryMmap,
        irq: IrqLine,
    ) -> Result<Self, virtio_queue::Error> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|size| Queue::new(*size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            memory,
            irq,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
        })
    }

    /// The device's status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn driver_ok(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_FAILED == 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn interrupt(&mut self) {
        self.interrupt_status |= INTERRUPT_VRING;
        // The driver also sees the used ring; a lost edge only delays it.
        let _ = self.irq.raise();
    }

    /// A guest read at `offset` in the register window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |queue| u32::from(queue.max_size())),
            REG_QUEUE_READY => self
                .queues
                .get(self.queue_select as usize)
                .map_or(0, |queue| u32::from(queue.ready())),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write at `offset` in the register window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        // Queue and feature setup is only allowed before DRIVER_OK (§4.2.3.2, §3.1.1).
        let setting_up = !self.driver_ok();
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_select = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            REG_DRIVER_FEATURES if setting_up => match self.driver_features_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            REG_QUEUE_SEL => self.queue_select = value,
            REG_QUEUE_NUM if setting_up => {
                if let Some(queue) = self.selected_queue() {
                    queue.set_size(value as u16);
                }
            }
            REG_QUEUE_READY if setting_up => {
                if let Some(queue) = self.selected_queue() {
                    queue.set_ready(value == 1);
                }
            }
            REG_QUEUE_DESC_LOW if setting_up => {
                self.queue_address(|queue| queue.set_desc_table_address(Some(value), None))
            }
            REG_QUEUE_DESC_HIGH if setting_up => {
                self.queue_address(|queue| queue.set_desc_table_address(None, Some(value)))
            }
            REG_QUEUE_DRIVER_LOW if setting_up => {
                self.queue_address(|queue| queue.set_avail_ring_address(Some(value), None))
            }
            REG_QUEUE_DRIVER_HIGH if setting_up => {
                self.queue_address(|queue| queue.set_avail_ring_address(None, Some(value)))
            }
            REG_QUEUE_DEVICE_LOW if setting_up => {
                self.queue_address(|queue| queue.set_used_ring_address(Some(value), None))
            }
            REG_QUEUE_DEVICE_HIGH if setting_up => {
                self.queue_address(|queue| queue.set_used_ring_address(None, Some(value)))
            }
            REG_QUEUE_NOTIFY => self.notify(value as usize),
            REG_INTERRUPT_ACK => self.interrupt_status &= !value,
            REG_STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn queue_address(&mut self, set: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.selected_queue() {
            set(queue);
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            // Refuse features the device never offered, and legacy drivers.
            let offered = self.device.features();
            if self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0 {
                value &= !STATUS_FEATURES_OK;
            }
        }
        if value & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0 {
            let valid = self
                .queues
                .iter()
                .all(|queue| !queue.ready() || queue.is_valid(&self.memory));
            if !valid {
                value |= STATUS_NEEDS_RESET;
                value &= !STATUS_DRIVER_OK;
            }
        }
        self.status = value;
    }

    fn reset(&mut self) {
        self.device.reset();
        for queue in &mut self.queues {
            queue.reset();
        }
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    /// The driver made buffers available on queue `index`: through the QueueNotify
    /// register (a vCPU's MMIO write) or its ioeventfd (a queue worker).
    pub fn notify(&mut self, index: usize) {
        if !self.driver_ok() || index >= self.queues.len() {
            return;
        }
        if self
            .device
            .process_queue(index, &mut self.queues, &self.memory)
        {
            self.interrupt();
        }
    }

    /// Lets the device take host-side input (the event loop calls this).
    pub fn process_host(&mut self) {
        if !self.driver_ok() {
            return;
        }
        if self.device.process_host(&mut self.queues, &self.memory) {
            self.interrupt();
        }
    }
}
