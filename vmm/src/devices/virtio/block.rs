//! virtio-blk (virtio 1.2 §5.2) on a raw file or block device: read, write, flush and
//! get-id requests, a read-only mode, capacity in 512-byte sectors.
//!
//! Each chain is first parsed and checked ([`request`]: header, directions, whole
//! sectors within the disk, a status byte); only a well-formed request is executed.
//! Data moves between the file and guest memory in place: `pread`/`pwrite` on the
//! guest's own pages, one call per buffer, no bounce buffer. Malformed chains complete
//! with `VIRTIO_BLK_S_IOERR`, unknown types with `VIRTIO_BLK_S_UNSUPP`.
//!
//! The requests run on the disk's queue thread
//! ([`queue_worker`](super::queue_worker)), never on a vCPU.

pub mod request;

use std::fs::File;
use std::os::fd::AsRawFd;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use self::request::{Disk, Request, RequestType};
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

    /// Parses and serves one chain; returns the bytes written into guest memory (the
    /// used length: data read, plus the status byte).
    fn serve(&mut self, descriptors: &[Descriptor], memory: &GuestMemoryMmap) -> u32 {
        let disk = Disk {
            sectors: self.sectors,
            read_only: self.read_only,
        };
        let (code, written, status) = match Request::parse(descriptors, memory, disk) {
            Ok(request) => {
                let (code, written) = self.execute(&request, memory);
                (code, written, request.status)
            }
            Err((_, Some(status))) => (S_IOERR, 0, status),
            // No status byte: nothing can be reported; the chain is returned unused.
            Err((_, None)) => return 0,
        };
        match memory.write_obj(code, status) {
            Ok(()) => written + 1,
            Err(_) => written,
        }
    }

    /// Executes a well-formed request; returns the status and the bytes written into
    /// guest memory.
    fn execute(&mut self, request: &Request, memory: &GuestMemoryMmap) -> (u8, u32) {
        match request.kind {
            RequestType::In | RequestType::Out => {
                let into_guest = request.kind == RequestType::In;
                let mut offset = request.sector * SECTOR_SIZE;
                let mut written = 0u32;
                for buffer in &request.data {
                    let done = match memory.get_slice(buffer.address, buffer.len as usize) {
                        Ok(slice) if into_guest => read_into(&self.file, &slice, offset),
                        Ok(slice) => write_from(&self.file, &slice, offset),
                        Err(_) => Err(std::io::ErrorKind::InvalidInput.into()),
                    };
                    if done.is_err() {
                        return (S_IOERR, written);
                    }
                    if into_guest {
                        written += buffer.len;
                    }
                    offset += u64::from(buffer.len);
                }
                (S_OK, written)
            }
            RequestType::Flush => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            RequestType::GetId => {
                let Some(buffer) = request.data.first() else {
                    return (S_IOERR, 0);
                };
                let len = (buffer.len as usize).min(ID_BYTES);
                match memory.write_slice(&self.id[..len], buffer.address) {
                    Ok(()) => (S_OK, len as u32),
                    Err(_) => (S_IOERR, 0),
                }
            }
            RequestType::Unsupported(_) => (S_UNSUPP, 0),
        }
    }
}

/// Reads `slice.len()` bytes of `file` at `offset` straight into guest memory.
fn read_into(file: &File, slice: &VolatileSlice<'_, ()>, offset: u64) -> std::io::Result<()> {
    let guard = slice.ptr_guard_mut();
    whole(
        guard.len(),
        offset,
        std::io::ErrorKind::UnexpectedEof,
        |done, position| {
            let at = guard.as_ptr().wrapping_add(done);
            // SAFETY: `at..at + (len - done)` lies inside the guest mapping `slice` covers
            // (vm-memory checked the range against the region), which stays mapped while the
            // guard lives; the kernel writes into it and no Rust reference to it exists (guest
            // memory is only ever accessed through volatile or raw pointers).
            unsafe { libc::pread(file.as_raw_fd(), at.cast(), guard.len() - done, position) }
        },
    )
}

/// Writes `slice.len()` bytes of guest memory straight to `file` at `offset`.
fn write_from(file: &File, slice: &VolatileSlice<'_, ()>, offset: u64) -> std::io::Result<()> {
    let guard = slice.ptr_guard();
    whole(
        guard.len(),
        offset,
        std::io::ErrorKind::WriteZero,
        |done, position| {
            let at = guard.as_ptr().wrapping_add(done);
            // SAFETY: `at..at + (len - done)` lies inside the guest mapping `slice` covers,
            // mapped while the guard lives; the kernel only reads it.
            unsafe { libc::pwrite(file.as_raw_fd(), at.cast(), guard.len() - done, position) }
        },
    )
}

/// Moves `len` bytes at file `offset` by calling `step(done, position)` (a `pread` or
/// `pwrite` of what is left) until all are moved: short transfers continue, `EINTR` is
/// retried, a transfer of nothing is `stalled`.
fn whole(
    len: usize,
    offset: u64,
    stalled: std::io::ErrorKind,
    mut step: impl FnMut(usize, libc::off_t) -> isize,
) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let position = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        match step(done, position) {
            0 => return Err(stalled.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
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
            let len = self.serve(&descriptors, memory);
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
