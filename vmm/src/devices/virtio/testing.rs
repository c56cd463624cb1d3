//! A simulated virtio driver for device tests: it programs the MMIO registers and lays out
//! split virtqueues in guest memory byte by byte, as the spec (§2.7) says a driver does,
//! so the device under test is exercised through the same path a guest uses.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::*;
use super::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, VirtioDevice,
};
use crate::devices::irq::IrqLine;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

const MEMORY: usize = 16 << 20;
const QUEUE_AREA: u64 = 0x10_0000;
const DATA_AREA: u64 = 0x40_0000;

struct Ring {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

/// A driver for one device.
pub struct Driver {
    pub transport: std::sync::Arc<MmioTransport>,
    pub memory: GuestMemoryMmap,
    pub irq: IrqLine,
    rings: Vec<Ring>,
    next_data: u64,
}

impl Driver {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let memory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("guest memory");
        let irq = IrqLine::new().expect("eventfd");
        let transport = std::sync::Arc::new(
            MmioTransport::new(device, memory.clone(), irq.clone()).expect("transport"),
        );
        Driver {
            transport,
            memory,
            irq,
            rings: Vec::new(),
            next_data: DATA_AREA,
        }
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    pub fn device_features(&mut self) -> u64 {
        self.write(REG_DEVICE_FEATURES_SEL, 0);
        let low = self.read(REG_DEVICE_FEATURES);
        self.write(REG_DEVICE_FEATURES_SEL, 1);
        let high = self.read(REG_DEVICE_FEATURES);
        u64::from(low) | (u64::from(high) << 32)
    }

    /// The initialization sequence of §3.1.1 with `features` and `queues` queues of
    /// `size`; returns the status register at the end.
    pub fn initialize(&mut self, features: u64, queues: usize, size: u16) -> u32 {
        assert_eq!(self.read(REG_MAGIC), MAGIC);
        assert_eq!(self.read(REG_VERSION), VERSION);
        self.write(REG_STATUS, 0);
        self.write(REG_STATUS, STATUS_ACKNOWLEDGE);
        self.write(REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.write(REG_DRIVER_FEATURES_SEL, 0);
        self.write(REG_DRIVER_FEATURES, features as u32);
        self.write(REG_DRIVER_FEATURES_SEL, 1);
        self.write(REG_DRIVER_FEATURES, (features >> 32) as u32);
        self.write(
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        if self.read(REG_STATUS) & STATUS_FEATURES_OK == 0 {
            return self.read(REG_STATUS);
        }
        self.rings.clear();
        for index in 0..queues {
            let base = QUEUE_AREA + index as u64 * 0x1_0000;
            self.write(REG_QUEUE_SEL, index as u32);
            assert!(self.read(REG_QUEUE_NUM_MAX) >= u32::from(size));
            self.write(REG_QUEUE_NUM, u32::from(size));
            let ring = Ring {
                size,
                desc: base,
                avail: base + 0x4000,
                used: base + 0x8000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            for (low, high, address) in [
                (REG_QUEUE_DESC_LOW, REG_QUEUE_DESC_HIGH, ring.desc),
                (REG_QUEUE_DRIVER_LOW, REG_QUEUE_DRIVER_HIGH, ring.avail),
                (REG_QUEUE_DEVICE_LOW, REG_QUEUE_DEVICE_HIGH, ring.used),
            ] {
                self.write(low, address as u32);
                self.write(high, (address >> 32) as u32);
            }
            self.write(REG_QUEUE_READY, 1);
            self.rings.push(ring);
        }
        self.write(
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.read(REG_STATUS)
    }

    /// Guest memory for a buffer of `len` bytes.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let address = self.next_data;
        self.next_data += len.div_ceil(16) * 16;
        address
    }

    /// Allocates and fills a buffer.
    pub fn buffer(&mut self, bytes: &[u8]) -> u64 {
        let address = self.alloc(bytes.len() as u64);
        self.memory
            .write_slice(bytes, GuestAddress(address))
            .expect("write buffer");
        address
    }

    pub fn bytes(&self, address: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        self.memory
            .read_slice(&mut bytes, GuestAddress(address))
            .expect("read buffer");
        bytes
    }

    /// Makes a chain of `(address, len, device-writable)` buffers available on `queue`;
    /// returns its head.
    pub fn submit(&mut self, queue: usize, buffers: &[(u64, u32, bool)]) -> u16 {
        let ring = &mut self.rings[queue];
        let head = ring.next_desc;
        for (position, (address, len, writable)) in buffers.iter().enumerate() {
            let index = (head + position as u16) % ring.size;
            let last = position + 1 == buffers.len();
            let flags =
                if last { 0 } else { DESC_F_NEXT } | if *writable { DESC_F_WRITE } else { 0 };
            let next = (index + 1) % ring.size;
            let entry = ring.desc + u64::from(index) * 16;
            self.memory
                .write_obj(*address, GuestAddress(entry))
                .expect("desc");
            self.memory
                .write_obj(*len, GuestAddress(entry + 8))
                .expect("desc");
            self.memory
                .write_obj(flags, GuestAddress(entry + 12))
                .expect("desc");
            self.memory
                .write_obj(next, GuestAddress(entry + 14))
                .expect("desc");
        }
        ring.next_desc = (head + buffers.len() as u16) % ring.size;
        let slot = ring.avail + 4 + u64::from(ring.avail_idx % ring.size) * 2;
        self.memory
            .write_obj(head, GuestAddress(slot))
            .expect("avail");
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        self.memory
            .write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .expect("avail idx");
        head
    }

    pub fn notify(&mut self, queue: usize) {
        self.write(REG_QUEUE_NOTIFY, queue as u32);
    }

    /// The used elements `(head, len)` returned since the last call.
    pub fn used(&mut self, queue: usize) -> Vec<(u32, u32)> {
        let ring = &mut self.rings[queue];
        let idx: u16 = self
            .memory
            .read_obj(GuestAddress(ring.used + 2))
            .expect("used idx");
        let mut elements = Vec::new();
        while ring.used_seen != idx {
            let slot = ring.used + 4 + u64::from(ring.used_seen % ring.size) * 8;
            let id: u32 = self.memory.read_obj(GuestAddress(slot)).expect("used id");
            let len: u32 = self
                .memory
                .read_obj(GuestAddress(slot + 4))
                .expect("used len");
            elements.push((id, len));
            ring.used_seen = ring.used_seen.wrapping_add(1);
        }
        elements
    }

    /// Whether the device raised its interrupt since the last call (and acknowledges it).
    pub fn interrupted(&mut self) -> bool {
        let raised = self.irq.event().read().is_ok();
        let status = self.read(REG_INTERRUPT_STATUS);
        self.write(REG_INTERRUPT_ACK, status);
        raised && status & INTERRUPT_VRING != 0
    }
}
