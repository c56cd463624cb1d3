//! Guest RAM: anonymous host mappings (vm-memory), one per region of
//! [`layout::ram_regions`](crate::layout::ram_regions), each handed to KVM as a memory
//! slot. Pages are only backed when the guest touches them.
//!
//! Registration is `unsafe`: KVM holds on to the mappings' addresses, so their owner must
//! outlive the VM and its vCPUs. [`crate::vm::Vm`] does, by owning the memory, the VM fd
//! and the vCPU threads, and dropping the memory last.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::layout::ram_regions;

/// Errors setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "cannot map {size} bytes of guest memory: {source}; lower --memory or free host memory"
    )]
    Map {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("KVM refused guest memory slot {slot} at {guest:#x} ({size} bytes): {source}")]
    Register {
        slot: u32,
        guest: u64,
        size: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest memory region at {guest:#x} has no host mapping")]
    NoHostAddress { guest: u64 },
}

/// Maps `size` bytes of guest RAM.
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { size, source })
}

/// Hands every region of `memory` to KVM.
///
/// # Safety
///
/// KVM keeps the host addresses of `memory`'s mappings and the guest reads and writes
/// them for as long as the VM lives, that is until `vm` *and every vCPU fd created from
/// it* are closed. The caller must keep `memory` (or a clone of it: clones share the
/// mappings) alive until then; were a mapping unmapped earlier, whatever the process maps
/// at that address next would be guest-writable.
pub unsafe fn register(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in memory.iter().enumerate() {
        let guest = region.start_addr().raw_value();
        let host = memory
            .get_host_address(region.start_addr())
            .map_err(|_| MemoryError::NoHostAddress { guest })?;
        let slot = slot as u32;
        let size = region.len();
        let descriptor = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: guest,
            memory_size: size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host..host+size` is a live mapping owned by `memory`, which the caller
        // keeps alive as long as `vm` and its vCPUs (this function's contract), and no
        // other slot overlaps it (the regions come from one non-overlapping layout).
        unsafe { vm.set_user_memory_region(descriptor) }.map_err(|source| {
            MemoryError::Register {
                slot,
                guest,
                size,
                source,
            }
        })?;
    }
    Ok(())
}
