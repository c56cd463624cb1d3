//! Getting a guest ready to run: the 64-bit Linux boot protocol.
//!
//! Order of steps, each writing into guest memory before any vCPU runs:
//! 1. Load the kernel: an ELF `vmlinux` at the physical addresses of its program headers,
//!    or a `bzImage`'s protected-mode part at 1 MiB (its real-mode setup code is not run;
//!    the 64-bit entry point is 0x200 past the load address).
//! 2. Load the initrd, page-aligned, at the top of low memory and above the kernel.
//! 3. Write the command line (with a `virtio_mmio.device=` entry per device appended
//!    only when asked: see [`BootSpec::mmio_cmdline`]).
//! 4. Write the ACPI tables ([`crate::acpi`]): how a stock kernel finds the CPUs and the
//!    virtio-mmio devices.
//! 5. Write the zero page (setup header, e820 map with the ACPI region reserved, command
//!    line and initrd pointers, the RSDP's address).
//! 6. Write the GDT, an empty IDT, identity page tables and the MP table.
//!
//! The MP table stays next to the ACPI tables: a kernel with ACPI uses the MADT and
//! ignores it, a kernel without `CONFIG_ACPI` (or booted with `acpi=off`) still finds its
//! CPUs and IOAPIC through it, and the two describe the same machine.
//!
//! The boot vCPU is then put in long mode (see `vcpu`) at the entry point with `%rsi`
//! pointing at the zero page.

pub mod gdt;
pub mod kernel_cache;
pub mod mptable;
pub mod paging;
pub mod params;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::Elf;
use linux_loader::loader::{KernelLoader, load_cmdline};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::acpi;
use crate::layout::{
    ACPI_START, CMDLINE_MAX_SIZE, CMDLINE_START, GDT_START, HIMEM_START, IDT_START, MPTABLE_START,
    VIRTIO_MMIO_SIZE, ZERO_PAGE_START, low_memory_end,
};

/// The kernel formats the loader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

/// A virtio-mmio device announced to the guest (DSDT, optionally the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAnnouncement {
    pub base: u64,
    pub irq: u32,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub memory: u64,
    pub cpus: u8,
    pub devices: &'a [MmioAnnouncement],
    /// Also announce the devices with `virtio_mmio.device=` command-line entries, for
    /// kernels with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` but without ACPI. Off by
    /// default: a kernel with both would register every device twice.
    pub mmio_cmdline: bool,
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub format: KernelFormat,
    /// The 64-bit entry point.
    pub entry: u64,
    pub kernel_end: u64,
    pub initrd: Option<(u64, u32)>,
}

/// Errors preparing the boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open the kernel {path}: {source}; check the path and its permissions")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel {path} is neither an ELF vmlinux nor a bzImage; give an uncompressed vmlinux or a bzImage"
    )]
    UnknownFormat { path: PathBuf },
    #[error("the bzImage {path} has no 64-bit entry point (XLF_KERNEL_64); build an x86-64 kernel")]
    Not64Bit { path: PathBuf },
    #[error("cannot load the kernel {path} into guest memory: {source}")]
    LoadKernel {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("cannot open the initrd {path}: {source}; check the path and its permissions")]
    OpenInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the initrd {path} ({size} bytes) does not fit between the kernel (ending at {kernel_end:#x}) and {limit:#x}; give the guest more memory"
    )]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("cannot load the initrd {path} into guest memory: {source}")]
    LoadInitrd {
        path: PathBuf,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("the kernel command line {cmdline:?} is invalid: {source}")]
    Cmdline {
        cmdline: String,
        #[source]
        source: linux_loader::cmdline::Error,
    },
    #[error("cannot write the kernel command line into guest memory: {source}")]
    WriteCmdline {
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    #[error("cannot write the {what} into guest memory: {source}; give the guest more memory")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// `xloadflags` bit: the kernel has a 64-bit entry point at 0x200.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry point from a bzImage's load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `initrd_addr_max` for kernels that do not say (ELF): the 2 GiB the protocol guarantees.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

/// The format of the kernel in `file`, from its magic numbers.
pub fn kernel_format(file: &mut File, path: &Path) -> Result<KernelFormat, BootError> {
    let io = |source| BootError::OpenKernel {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    if file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    file.seek(SeekFrom::Start(0x202)).map_err(io)?;
    if file.read_exact(&mut magic).is_ok() && magic == *b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(BootError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// The command line the guest gets: the configured one, then one `virtio_mmio.device=`
/// per device (`<size>@<base>:<irq>`, the format of the kernel's virtio_mmio driver).
pub fn build_cmdline(base: &str, devices: &[MmioAnnouncement]) -> Result<Cmdline, BootError> {
    let error = |source| BootError::Cmdline {
        cmdline: base.to_string(),
        source,
    };
    let mut cmdline = Cmdline::try_from(base, CMDLINE_MAX_SIZE).map_err(error)?;
    for device in devices {
        cmdline
            .add_virtio_mmio_device(
                VIRTIO_MMIO_SIZE,
                GuestAddress(device.base),
                device.irq,
                None,
            )
            .map_err(error)?;
    }
    Ok(cmdline)
}

/// Loads everything the boot needs into `memory`; returns where the boot vCPU starts.
pub fn load(memory: &GuestMemoryMmap, spec: &BootSpec<'_>) -> Result<BootEntry, BootError> {
    let mut kernel = File::open(spec.kernel).map_err(|source| BootError::OpenKernel {
        path: spec.kernel.to_path_buf(),
        source,
    })?;
    let format = kernel_format(&mut kernel, spec.kernel)?;
    let load_error = |source| BootError::LoadKernel {
        path: spec.kernel.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    let (entry, kernel_end, header) = match format {
        KernelFormat::Elf => {
            let loaded = Elf::load(memory, None, &mut kernel, himem).map_err(load_error)?;
            (loaded.kernel_load.0, loaded.kernel_end, None)
        }
        KernelFormat::BzImage => {
            let loaded = BzImage::load(memory, None, &mut kernel, himem).map_err(load_error)?;
            let header = loaded
                .setup_header
                .ok_or_else(|| BootError::UnknownFormat {
                    path: spec.kernel.to_path_buf(),
                })?;
            if header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::Not64Bit {
                    path: spec.kernel.to_path_buf(),
                });
            }
            (
                loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                loaded.kernel_end,
                Some(header),
            )
        }
    };

    let initrd = match spec.initrd {
        None => None,
        Some(path) => {
            let limit = header
                .map(|header| u64::from(header.initrd_addr_max))
                .filter(|max| *max != 0)
                .unwrap_or(DEFAULT_INITRD_ADDR_MAX)
                .saturating_add(1)
                .min(low_memory_end(spec.memory));
            Some(load_initrd(memory, path, kernel_end, limit)?)
        }
    };

    let announced: &[MmioAnnouncement] = if spec.mmio_cmdline { spec.devices } else { &[] };
    let cmdline = build_cmdline(spec.cmdline, announced)?;
    load_cmdline(memory, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(|source| BootError::WriteCmdline { source })?;
    let cmdline_size = cmdline
        .as_cstring()
        .map(|line| line.as_bytes_with_nul().len() as u32)
        .map_err(|source| BootError::Cmdline {
            cmdline: spec.cmdline.to_string(),
            source,
        })?;

    let tables = acpi::build(spec.cpus, spec.devices)?;
    memory
        .write_slice(&tables.bytes, GuestAddress(ACPI_START))
        .map_err(|source| BootError::Write {
            what: "ACPI tables",
            source,
        })?;

    let zero_page = params::ZeroPage {
        setup_header: header,
        cmdline_addr: CMDLINE_START,
        cmdline_size,
        initrd,
        e820: params::e820_map(spec.memory),
        acpi_rsdp: Some(tables.rsdp),
    }
    .build()?;
    write(memory, "zero page", ZERO_PAGE_START, zero_page)?;

    for (index, entry) in gdt::boot_gdt().iter().enumerate() {
        write(memory, "GDT", GDT_START + index as u64 * 8, *entry)?;
    }
    write(memory, "IDT", IDT_START, 0u64)?;
    for (address, entry) in paging::identity_tables() {
        write(memory, "page tables", address, entry)?;
    }
    let table = mptable::mptable(spec.cpus)?;
    memory
        .write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(|source| BootError::Write {
            what: "MP table",
            source,
        })?;

    Ok(BootEntry {
        format,
        entry,
        kernel_end,
        initrd,
    })
}

fn write<T: vm_memory::ByteValued>(
    memory: &GuestMemoryMmap,
    what: &'static str,
    address: u64,
    value: T,
) -> Result<(), BootError> {
    memory
        .write_obj(value, GuestAddress(address))
        .map_err(|source| BootError::Write { what, source })
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible below `limit`,
/// and above the kernel.
pub fn initrd_address(size: u64, kernel_end: u64, limit: u64) -> Option<u64> {
    let address = limit.checked_sub(size)? & !0xfff;
    (address >= kernel_end).then_some(address)
}

fn load_initrd(
    memory: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u32), BootError> {
    let open = |source| BootError::OpenInitrd {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open)?;
    let size = file.metadata().map_err(open)?.len();
    let too_large = || BootError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
        kernel_end,
        limit,
    };
    let address = initrd_address(size, kernel_end, limit).ok_or_else(too_large)?;
    let size32 = u32::try_from(size).map_err(|_| too_large())?;
    memory
        .read_exact_volatile_from(GuestAddress(address), &mut file, size as usize)
        .map_err(|source| BootError::LoadInitrd {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((address, size32))
}

#[cfg(test)]
mod tests;
