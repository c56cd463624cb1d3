//! A virtio-blk request (virtio 1.2 §5.2.6), parsed apart from its execution, as
//! Firecracker's `devices/virtio/block/virtio/request.rs` does: [`Request::parse`] checks
//! everything a hostile or buggy driver can get wrong, against the chain's descriptors
//! and the disk's geometry, before a byte of the disk or of guest memory is touched;
//! [`super::Block`] then executes a request that is known to be well formed.
//!
//! A chain is a 16-byte header the device reads (type, reserved, sector), the data
//! buffers, and one status byte the device writes last. Checked here:
//! - the last descriptor is device-writable and at least one byte (else there is nowhere
//!   to report anything: the chain completes with length 0, [`RequestError::NoStatus`]);
//! - the header is device-readable, 16 bytes or more, and readable from guest memory;
//! - reads (`IN`) have only device-writable buffers, writes (`OUT`) only device-readable
//!   ones; a write to a read-only disk is refused;
//! - a transfer is a whole number of 512-byte sectors and lies within the disk;
//! - `GET_ID` has a device-writable buffer.
//!
//! Every error but [`RequestError::NoStatus`] completes the chain with `VIRTIO_BLK_S_IOERR`;
//! an unknown type parses (as [`RequestType::Unsupported`]) and completes with
//! `VIRTIO_BLK_S_UNSUPP`.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{SECTOR_SIZE, T_FLUSH, T_GET_ID, T_IN, T_OUT};

/// The header's length: `type: u32`, `reserved: u32`, `sector: u64`.
pub const HEADER_LEN: u32 = 16;

/// What the request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// Read sectors into the data buffers.
    In,
    /// Write the data buffers to sectors.
    Out,
    /// Make written data durable.
    Flush,
    /// Return the disk's serial.
    GetId,
    /// A type the device does not offer (the raw value).
    Unsupported(u32),
}

/// One data buffer: where it is in guest memory and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub address: GuestAddress,
    pub len: u32,
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestType,
    /// The first sector of a transfer (0 otherwise).
    pub sector: u64,
    /// The data buffers, in chain order.
    pub data: Vec<Buffer>,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// What [`Request::parse`] checks the chain against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    pub read_only: bool,
}

/// Why a chain is not a request the device executes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the chain has no device-writable status byte at its end")]
    NoStatus,
    #[error("the header descriptor is missing, device-writable or shorter than 16 bytes")]
    BadHeader,
    #[error("the header at {address:#x} is outside guest memory")]
    HeaderUnreadable { address: u64 },
    #[error("a data buffer of a {kind:?} request goes the wrong way")]
    WrongDirection { kind: RequestType },
    #[error("a transfer of {len} bytes is not a whole number of 512-byte sectors")]
    NotSectorMultiple { len: u64 },
    #[error("sectors {sector}..+{count} are beyond the disk's {capacity}")]
    OutOfRange {
        sector: u64,
        count: u64,
        capacity: u64,
    },
    #[error("a write to a read-only disk")]
    ReadOnly,
    #[error("GET_ID without a device-writable buffer")]
    NoIdBuffer,
}

impl Request {
    /// Parses a descriptor chain (in order, head first). On error, the status byte's
    /// address, when there is one, comes back with it so the caller can report the error.
    pub fn parse(
        descriptors: &[Descriptor],
        memory: &GuestMemoryMmap,
        disk: Disk,
    ) -> Result<Request, (RequestError, Option<GuestAddress>)> {
        let Some((status, rest)) = descriptors.split_last() else {
            return Err((RequestError::NoStatus, None));
        };
        if !status.is_write_only() || status.len() < 1 {
            return Err((RequestError::NoStatus, None));
        }
        let fail = |error| Err((error, Some(status.addr())));
        let Some((header, data)) = rest.split_first() else {
            return fail(RequestError::BadHeader);
        };
        if header.is_write_only() || header.len() < HEADER_LEN {
            return fail(RequestError::BadHeader);
        }
        let unreadable = RequestError::HeaderUnreadable {
            address: header.addr().0,
        };
        let Ok(raw_kind) = memory.read_obj::<u32>(header.addr()) else {
            return fail(unreadable);
        };
        let Ok(sector) = memory.read_obj::<u64>(GuestAddress(header.addr().0 + 8)) else {
            return fail(unreadable);
        };
        let kind = match raw_kind {
            T_IN => RequestType::In,
            T_OUT => RequestType::Out,
            T_FLUSH => RequestType::Flush,
            T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        };
        let data: Vec<Buffer> = data
            .iter()
            .map(|descriptor| Buffer {
                address: descriptor.addr(),
                len: descriptor.len(),
            })
            .collect();
        match kind {
            RequestType::In | RequestType::Out => {
                let into_guest = kind == RequestType::In;
                if rest[1..]
                    .iter()
                    .any(|descriptor| descriptor.is_write_only() != into_guest)
                {
                    return fail(RequestError::WrongDirection { kind });
                }
                if !into_guest && disk.read_only {
                    return fail(RequestError::ReadOnly);
                }
                let len: u64 = data.iter().map(|buffer| u64::from(buffer.len)).sum();
                if !len.is_multiple_of(SECTOR_SIZE) {
                    return fail(RequestError::NotSectorMultiple { len });
                }
                let count = len / SECTOR_SIZE;
                if sector
                    .checked_add(count)
                    .is_none_or(|end| end > disk.sectors)
                {
                    return fail(RequestError::OutOfRange {
                        sector,
                        count,
                        capacity: disk.sectors,
                    });
                }
            }
            RequestType::GetId => {
                if !rest[1..].first().is_some_and(Descriptor::is_write_only) {
                    return fail(RequestError::NoIdBuffer);
                }
            }
            RequestType::Flush | RequestType::Unsupported(_) => {}
        }
        let sector = match kind {
            RequestType::In | RequestType::Out => sector,
            _ => 0,
        };
        Ok(Request {
            kind,
            sector,
            data,
            status: status.addr(),
        })
    }
}

#[cfg(test)]
mod tests;
