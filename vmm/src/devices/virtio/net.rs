//! virtio-net (virtio 1.2 §5.1) on a tap device: queue 0 receives, queue 1 transmits;
//! the MAC address is in the configuration space. No offloads: every frame carries the
//! 12-byte `virtio_net_hdr_v1` with no flags, and the tap is opened without
//! `IFF_VNET_HDR`, so the device adds and strips that header.
//!
//! The tap is the VM driver's: attached by name with the workspace's `gitvisor-tap`
//! crate (the QEMU backend uses the same), then made non-blocking ([`open_tap`]).
//!
//! Receiving: when the tap is readable (the event loop calls
//! [`VirtioDevice::process_host`]) or the driver adds receive buffers, frames are read
//! until the tap is empty or the guest has no buffer left; a frame then waits in the tap
//! until the next notification.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{DEVICE_ID_NET, F_VERSION_1, VirtioDevice};

pub const F_MAC: u64 = 1 << 5;
pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// `sizeof(struct virtio_net_hdr_v1)`.
pub const HEADER_LEN: usize = 12;
/// The largest frame read from the tap (64 KiB plus an Ethernet header).
const MAX_FRAME: usize = 65_562;

/// A virtio network device on a tap (or anything frame-oriented that reads and writes
/// one frame per call).
pub struct Net<T: Read + Write + Send> {
    tap: T,
    mac: [u8; 6],
    frame: Vec<u8>,
}

impl<T: Read + Write + Send> Net<T> {
    /// `tap` must be non-blocking.
    pub fn new(tap: T, mac: [u8; 6]) -> Self {
        Net {
            tap,
            mac,
            frame: vec![0; HEADER_LEN + MAX_FRAME],
        }
    }

    fn transmit(&mut self, queue: &mut Queue, memory: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let mut packet = Vec::new();
            for descriptor in chain.filter(|descriptor| !descriptor.is_write_only()) {
                let start = packet.len();
                packet.resize(start + descriptor.len() as usize, 0);
                if memory
                    .read_slice(&mut packet[start..], descriptor.addr())
                    .is_err()
                {
                    packet.truncate(start);
                    break;
                }
            }
            if packet.len() > HEADER_LEN {
                // A frame the tap refuses (down, full) is dropped, as on a wire.
                let _ = self.tap.write(&packet[HEADER_LEN..]);
            }
            if queue.add_used(memory, head, 0).is_err() {
                break;
            }
            used = true;
        }
        used
    }

    fn receive(&mut self, queue: &mut Queue, memory: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let buffers: Vec<Descriptor> = chain.filter(|d| d.is_write_only()).collect();
            let len = match self.tap.read(&mut self.frame[HEADER_LEN..]) {
                Ok(len) => len,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Nothing to read (or the tap failed): give the buffer back.
                    queue.go_to_previous_position();
                    break;
                }
            };
            self.frame[..HEADER_LEN].fill(0);
            // num_buffers = 1 (the last field of the v1 header).
            self.frame[HEADER_LEN - 2] = 1;
            let mut remaining = &self.frame[..HEADER_LEN + len];
            let mut written = 0u32;
            for buffer in &buffers {
                if remaining.is_empty() {
                    break;
                }
                let take = remaining.len().min(buffer.len() as usize);
                if memory
                    .write_slice(&remaining[..take], buffer.addr())
                    .is_err()
                {
                    break;
                }
                written += take as u32;
                remaining = &remaining[take..];
            }
            if queue.add_used(memory, head, written).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}

impl<T: Read + Write + Send> VirtioDevice for Net<T> {
    fn device_type(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|offset| self.mac.get(offset + index))
                .copied()
                .unwrap_or(0);
        }
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        memory: &GuestMemoryMmap,
    ) -> bool {
        match (index, queues) {
            (TX_QUEUE, [_, tx, ..]) => self.transmit(tx, memory),
            (RX_QUEUE, [rx, ..]) => self.receive(rx, memory),
            _ => false,
        }
    }

    fn process_host(&mut self, queues: &mut [Queue], memory: &GuestMemoryMmap) -> bool {
        match queues.first_mut() {
            Some(rx) => self.receive(rx, memory),
            None => false,
        }
    }
}

/// The device on a real tap.
pub type TapNet = Net<File>;

/// Errors attaching to a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "cannot attach to the tap {name}: {source}; create it (the VM driver does) and check that no other process holds it"
    )]
    Attach {
        name: String,
        #[source]
        source: gitvisor_tap::TapError,
    },
    #[error("cannot make the tap {name} non-blocking: {source}")]
    NonBlocking {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Attaches to the tap `name` (`IFF_TAP | IFF_NO_PI`, no vnet header; a missing tap is
/// created, non-persistent) and makes its queue non-blocking, as [`Net`] needs: a read
/// with no frame waiting fails with `WouldBlock`.
pub fn open_tap(name: &str) -> Result<File, TapError> {
    let tap = gitvisor_tap::open(name, false).map_err(|source| TapError::Attach {
        name: name.to_string(),
        source,
    })?;
    fcntl(&tap, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|source| TapError::NonBlocking {
        name: name.to_string(),
        source,
    })?;
    Ok(tap)
}

#[cfg(test)]
mod tests;
