//! The Linux zero page (`struct boot_params`): the setup header fields a boot loader must
//! fill in, the e820 memory map, the command line, the initrd and the ACPI RSDP's
//! address (Documentation/arch/x86/boot.rst and zero-page.rst).
//!
//! Pure: the builder returns the structure, [`super`] writes it into guest memory.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use crate::layout::{ACPI_END, ACPI_START, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

/// `boot_flag`: the 0xAA55 signature.
pub const BOOT_FLAG: u16 = 0xaa55;
/// `header`: "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: 0xff, a loader without an assigned id.
pub const LOADER_UNDEFINED: u8 = 0xff;
/// `kernel_alignment` for ELF kernels: 16 MiB, the x86-64 default.
pub const KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory (the ACPI tables: the DSDT's AML is used at run time).
pub const E820_RESERVED: u32 = 2;
/// The zero page holds at most this many e820 entries (`E820_MAX_ENTRIES_ZEROPAGE`).
pub const E820_MAX: usize = 128;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map of a guest with `memory` bytes of RAM: base memory below the EBDA, the
/// ACPI tables' region (reserved), high memory from 1 MiB to the MMIO hole, the rest
/// above 4 GiB.
pub fn e820_map(memory: u64) -> Vec<E820Entry> {
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    };
    let acpi = E820Entry {
        addr: ACPI_START,
        size: ACPI_END - ACPI_START,
        kind: E820_RESERVED,
    };
    let mut map = vec![ram(0, EBDA_START), acpi];
    if memory > HIMEM_START {
        map.push(ram(HIMEM_START, memory.min(MMIO_GAP_START)));
    }
    if memory > MMIO_GAP_START {
        map.push(ram(MMIO_GAP_END, MMIO_GAP_END + memory - MMIO_GAP_START));
    }
    map
}

/// What goes into the zero page.
#[derive(Debug, Clone, Default)]
pub struct ZeroPage {
    /// The bzImage's own setup header, if the kernel is a bzImage; ELF kernels have none.
    pub setup_header: Option<setup_header>,
    pub cmdline_addr: u64,
    /// Length of the command line including its NUL.
    pub cmdline_size: u32,
    /// Address and length of the initrd.
    pub initrd: Option<(u64, u32)>,
    pub e820: Vec<E820Entry>,
    /// The ACPI RSDP (`acpi_rsdp_addr`, boot protocol 2.14).
    pub acpi_rsdp: Option<u64>,
}

/// Errors building the zero page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    #[error(
        "the command line at {addr:#x} is beyond 4 GiB; the 64-bit boot protocol takes a 32-bit pointer here"
    )]
    CmdlineHigh { addr: u64 },
    #[error("the initrd at {addr:#x} is beyond 4 GiB; place it in low memory")]
    InitrdHigh { addr: u64 },
    #[error("the e820 map has {count} entries, the zero page holds {E820_MAX}")]
    TooManyE820 { count: usize },
}

impl ZeroPage {
    /// The `boot_params` for this boot.
    pub fn build(&self) -> Result<boot_params, ParamsError> {
        let mut params = boot_params::default();
        if let Some(header) = self.setup_header {
            params.hdr = header;
        } else {
            params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
        }
        params.hdr.type_of_loader = LOADER_UNDEFINED;
        params.hdr.boot_flag = BOOT_FLAG;
        params.hdr.header = HDRS_MAGIC;
        params.hdr.cmd_line_ptr =
            u32::try_from(self.cmdline_addr).map_err(|_| ParamsError::CmdlineHigh {
                addr: self.cmdline_addr,
            })?;
        params.hdr.cmdline_size = self.cmdline_size;
        if let Some((addr, size)) = self.initrd {
            params.hdr.ramdisk_image =
                u32::try_from(addr).map_err(|_| ParamsError::InitrdHigh { addr })?;
            params.hdr.ramdisk_size = size;
        }
        if self.e820.len() > E820_MAX {
            return Err(ParamsError::TooManyE820 {
                count: self.e820.len(),
            });
        }
        for (slot, entry) in params.e820_table.iter_mut().zip(&self.e820) {
            *slot = boot_e820_entry {
                addr: entry.addr,
                size: entry.size,
                r#type: entry.kind,
            };
        }
        params.e820_entries = self.e820.len() as u8;
        if let Some(rsdp) = self.acpi_rsdp {
            params.acpi_rsdp_addr = rsdp;
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::ByteValued;

    fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
    }

    /// Offsets from zero-page.rst and boot.rst, so a wrong field lands at a wrong place.
    #[test]
    fn fields_sit_where_the_boot_protocol_says() {
        let page = ZeroPage {
            setup_header: None,
            cmdline_addr: 0x2_0000,
            cmdline_size: 12,
            initrd: Some((0x7f0_0000, 0x1234)),
            e820: e820_map(256 << 20),
            acpi_rsdp: Some(0xe_0000),
        };
        let params = page.build().expect("builds");
        let bytes = params.as_slice();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(u16_at(bytes, 0x1fe), 0xaa55, "boot_flag");
        assert_eq!(u32_at(bytes, 0x202), 0x5372_6448, "header");
        assert_eq!(bytes[0x210], 0xff, "type_of_loader");
        assert_eq!(u32_at(bytes, 0x218), 0x7f0_0000, "ramdisk_image");
        assert_eq!(u32_at(bytes, 0x21c), 0x1234, "ramdisk_size");
        assert_eq!(u32_at(bytes, 0x228), 0x2_0000, "cmd_line_ptr");
        assert_eq!(u32_at(bytes, 0x230), 0x100_0000, "kernel_alignment");
        assert_eq!(u32_at(bytes, 0x238), 12, "cmdline_size");
        assert_eq!(u64_at(bytes, 0x070), 0xe_0000, "acpi_rsdp_addr");
        assert_eq!(bytes[0x1e8], 3, "e820_entries");
        // e820_table at 0x2d0, 20 bytes per entry: addr, size, type.
        assert_eq!(u64_at(bytes, 0x2d0), 0);
        assert_eq!(u64_at(bytes, 0x2d8), 0x9_fc00);
        assert_eq!(u32_at(bytes, 0x2e0), 1);
        assert_eq!(u64_at(bytes, 0x2e4), 0xe_0000);
        assert_eq!(u64_at(bytes, 0x2ec), 0x2_0000);
        assert_eq!(u32_at(bytes, 0x2f4), 2, "reserved");
        assert_eq!(u64_at(bytes, 0x2f8), 0x10_0000);
        assert_eq!(u64_at(bytes, 0x300), (256 << 20) - 0x10_0000);
        assert_eq!(u32_at(bytes, 0x308), 1);
    }

    #[test]
    fn a_bzimage_header_is_kept_and_the_loader_fields_set() {
        let header = setup_header {
            setup_sects: 27,
            version: 0x020f,
            loadflags: 0x1,
            kernel_alignment: 0x20_0000,
            ..Default::default()
        };
        let params = ZeroPage {
            setup_header: Some(header),
            cmdline_addr: 0x2_0000,
            cmdline_size: 1,
            ..Default::default()
        }
        .build()
        .expect("builds");
        assert_eq!({ params.hdr.setup_sects }, 27);
        assert_eq!({ params.hdr.version }, 0x020f);
        assert_eq!({ params.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.header }, HDRS_MAGIC);
    }

    #[test]
    fn memory_above_the_hole_goes_above_four_gib() {
        let map = e820_map(6 << 30);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[2],
            E820Entry {
                addr: 0x10_0000,
                size: 0xc000_0000 - 0x10_0000,
                kind: 1
            }
        );
        assert_eq!(
            map[3],
            E820Entry {
                addr: 0x1_0000_0000,
                size: 3 << 30,
                kind: 1
            }
        );
        let ram: u64 = map
            .iter()
            .filter(|entry| entry.kind == E820_RAM)
            .map(|entry| entry.size)
            .sum();
        assert!(ram <= 6 << 30);
        // Sorted and disjoint, as Linux expects.
        for pair in map.windows(2) {
            assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{pair:?}");
        }
    }

    #[test]
    fn pointers_the_header_cannot_hold_are_refused() {
        let high = ZeroPage {
            cmdline_addr: 1 << 32,
            ..Default::default()
        };
        assert_eq!(
            high.build().err(),
            Some(ParamsError::CmdlineHigh { addr: 1 << 32 })
        );
    }
}
