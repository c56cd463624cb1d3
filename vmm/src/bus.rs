//! Where a vCPU's port and MMIO accesses go: COM1 at 0x3f8, the i8042 at 0x60/0x64, the
//! ACPI sleep and reset registers at 0x600–0x602, the GED's event register at 0x603, the
//! virtio-mmio windows from
//! 0xd000_0000. Anything else reads as all ones (an empty bus,
//! which is what Linux expects when it probes for PCI, the RTC or a second UART) and
//! ignores writes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::devices::acpi_pm::AcpiPm;
use crate::devices::ged::Ged;
use crate::devices::i8042::{self, I8042};
use crate::devices::serial::{COM1_BASE, COM1_LEN, SerialDevice};
use crate::devices::virtio::mmio::MmioTransport;
use crate::layout::VIRTIO_MMIO_SIZE;

/// A virtio-mmio device and the base of its register window.
pub type MmioSlot = (u64, Arc<MmioTransport>);

/// The guest's buses.
pub struct Bus {
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    acpi_pm: AcpiPm,
    ged: Arc<Ged>,
    virtio: Vec<MmioSlot>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bus {
    pub fn new(
        serial: Arc<Mutex<SerialDevice>>,
        i8042: Arc<Mutex<I8042>>,
        acpi_pm: AcpiPm,
        ged: Arc<Ged>,
        virtio: Vec<MmioSlot>,
    ) -> Self {
        Bus {
            serial,
            i8042,
            acpi_pm,
            ged,
            virtio,
        }
    }

    fn virtio_at(&self, address: u64) -> Option<(u64, &MmioTransport)> {
        self.virtio.iter().find_map(|(base, device)| {
            (address >= *base && address < base + VIRTIO_MMIO_SIZE)
                .then(|| (address - base, &**device))
        })
    }
}

impl crate::vcpu::ExitHandler for Bus {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&port) {
            *first = lock(&self.serial).read((port - COM1_BASE) as u8);
        } else if port == i8042::DATA_PORT || port == i8042::COMMAND_PORT {
            *first = lock(&self.i8042).read(port);
        } else if AcpiPm::handles(port) {
            *first = self.acpi_pm.read(port);
        } else if Ged::handles(port) {
            *first = self.ged.read();
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        let Some(value) = data.first().copied() else {
            return;
        };
        if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&port) {
            // An interrupt that cannot be raised leaves the guest polling the UART.
            let _ = lock(&self.serial).write((port - COM1_BASE) as u8, value);
        } else if port == i8042::DATA_PORT || port == i8042::COMMAND_PORT {
            lock(&self.i8042).write(port, value);
        } else if AcpiPm::handles(port) {
            self.acpi_pm.write(port, value);
        }
    }

    fn mmio_read(&self, address: u64, data: &mut [u8]) {
        match self.virtio_at(address) {
            Some((offset, device)) => device.read(offset, data),
            None => data.fill(0xff),
        }
    }

    fn mmio_write(&self, address: u64, data: &[u8]) {
        if let Some((offset, device)) = self.virtio_at(address) {
            device.write(offset, data);
        }
    }
}
