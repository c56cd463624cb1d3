//! virtio-blk (virtio 1.2 §5.2) on a raw file or block device: read, write, flush and
//! get-id requests, a read-only mode, capacity in 512-byte sectors.
//!
//! A request is a descriptor chain: a 16-byte header the device reads (type, reserved,
//! sector), the data buffers, and one status byte the device writes last. Requests that
//! reach past the end of the disk, write a read-only disk or have a malformed chain
//! complete with `VIRTIO_BLK_S_IOERR`; unknown types with `VIRTIO_BLK_S_UNSUPP`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{DEVICE_ID_BLOCK, F_VERSION_1, VirtioDevice};

pub const SECTOR_SIZE: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// The one request queue (no multi-queue).
pub const REQUEST_QUEUE: u32 = 0;

pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// The length of the id a GET_ID request returns.
pub const ID_BYTES: usize = 20;
/// The longest request the device serves, in bytes (a guard against a hostile driver
/// asking for a huge bounce buffer).
const MAX_TRANSFER: u64 = 16 << 20;

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot read the size of the disk {path}: {source}")]
    Size {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A virtio block device.
pub struct Block {
    file: File,
    sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
}

impl Block {
    /// A device on `file` (opened read-write unless `read_only`); `id` is what the guest
    /// reads as the disk's serial (truncated to 20 bytes).
    pub fn new(file: File, path: &str, read_only: bool, id: &str) -> Result<Self, BlockError> {
        let size = file_size(&file).map_err(|source| BlockError::Size {
            path: path.to_string(),
            source,
        })?;
        let mut serial = [0u8; ID_BYTES];
        for (slot, byte) in serial.iter_mut().zip(id.bytes()) {
            *slot = byte;
        }
        Ok(Block {
            file,
            sectors: size / SECTOR_SIZE,
            read_only,
            id: serial,
        })
    }

    /// Serves one request; returns the bytes written into guest memory.
    fn execute(&mut self, descriptors: &[Descriptor], memory: &GuestMemoryMmap) -> u32 {
        let Some((status, rest)) = descriptors.split_last() else {
            return 0;
        };
        if !status.is_write_only() || status.len() < 1 {
            return 0;
        }
        let (code, written) = match rest.split_first() {
            Some((header, data)) if !header.is_write_only() && header.len() >= 16 => {
                self.request(header, data, memory)
            }
            _ => (S_IOERR, 0),
        };
        match memory.write_obj(code, status.addr()) {
            Ok(()) => written + 1,
            Err(_) => written,
        }
    }

    fn request(
        &mut self,
        header: &Descriptor,
        data: &[Descriptor],
        memory: &GuestMemoryMmap,
    ) -> (u8, u32) {
        let (Ok(kind), Ok(sector)) = (
            memory.read_obj::<u32>(header.addr()),
            memory.read_obj::<u64>(GuestAddress(header.addr().0 + 8)),
        ) else {
            return (S_IOERR, 0);
        };
        match kind {
            T_IN => self.transfer(sector, data, memory, true),
            T_OUT if self.read_only => (S_IOERR, 0),
            T_OUT => self.transfer(sector, data, memory, false),
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let Some(buffer) = data.first().filter(|buffer| buffer.is_write_only()) else {
                    return (S_IOERR, 0);
                };
                let len = (buffer.len() as usize).min(ID_BYTES);
                match memory.write_slice(&self.id[..len], buffer.addr()) {
                    Ok(()) => (S_OK, len as u32),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        }
    }

    /// Reads (`into_guest`) or writes the data buffers at `sector`.
    fn transfer(
        &mut self,
        sector: u64,
        data: &[Descriptor],
        memory: &GuestMemoryMmap,
        into_guest: bool,
    ) -> (u8, u32) {
        let total: u64 = data.iter().map(|buffer| u64::from(buffer.len())).sum();
        let in_bounds = sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(total))
            .is_some_and(|end| end <= self.sectors * SECTOR_SIZE);
        let directions_match = data
            .iter()
            .all(|buffer| buffer.is_write_only() == into_guest);
        if !in_bounds || !directions_match || total > MAX_TRANSFER {
            return (S_IOERR, 0);
        }
        let mut offset = sector * SECTOR_SIZE;
        let mut written = 0u32;
        for buffer in data {
            let mut bytes = vec![0u8; buffer.len() as usize];
            let done = if into_guest {
                self.file.read_exact_at(&mut bytes, offset).is_ok()
                    && memory.write_slice(&bytes, buffer.addr()).is_ok()
            } else {
                memory.read_slice(&mut bytes, buffer.addr()).is_ok()
                    && self.file.write_all_at(&bytes, offset).is_ok()
            };
            if !done {
                return (S_IOERR, written);
            }
            if into_guest {
                written += buffer.len();
            }
            offset += u64::from(buffer.len());
        }
        (S_OK, written)
    }
}

/// The size of a regular file or a block device.
fn file_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut handle = file;
    let size = handle.seek(SeekFrom::End(0))?;
    handle.seek(SeekFrom::Start(0))?;
    Ok(size)
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_FLUSH | if self.read_only { F_RO } else { 0 }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // The configuration space starts with `capacity`, a little-endian u64.
        let config = self.sectors.to_le_bytes();
        for (index, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|offset| config.get(offset + index))
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
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let descriptors: Vec<Descriptor> = chain.collect();
            let len = self.execute(&descriptors, memory);
            if queue.add_used(memory, head, len).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}

#[cfg(test)]
mod tests;
