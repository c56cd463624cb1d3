//! The loader against synthetic kernels built byte by byte from the formats' specs: where
//! the kernel, initrd, command line, zero page and tables land.

use std::io::Write;

use linux_loader::bootparam::boot_params;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::layout::{PD_START, PML4_START};

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

const MEMORY: u64 = 64 << 20;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY as usize)]).expect("guest memory")
}

/// A minimal ELF64 executable: one PT_LOAD of `payload` at `paddr`, entry at `paddr`.
fn elf(paddr: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    bytes.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&paddr.to_le_bytes()); // e_entry
    bytes.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    bytes.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    bytes.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    bytes.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    bytes.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    bytes.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    bytes.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    let offset = 64 + 56;
    bytes.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    bytes.extend_from_slice(&5u32.to_le_bytes()); // R+X
    bytes.extend_from_slice(&(offset as u64).to_le_bytes());
    bytes.extend_from_slice(&paddr.to_le_bytes()); // p_vaddr
    bytes.extend_from_slice(&paddr.to_le_bytes()); // p_paddr
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64 + 0x1000).to_le_bytes());
    bytes.extend_from_slice(&0x1000u64.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A minimal bzImage: boot sector and `setup_sects` of setup code with a 2.15 header,
/// then `payload` as the protected-mode kernel.
fn bzimage(xloadflags: u16, initrd_addr_max: u32, payload: &[u8]) -> Vec<u8> {
    let setup_sects = 4u8;
    let mut bytes = vec![0u8; (usize::from(setup_sects) + 1) * 512];
    bytes[0x1f1] = setup_sects;
    bytes[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    bytes[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    bytes[0x211] = 1; // LOADED_HIGH
    bytes[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    bytes[0x22c..0x230].copy_from_slice(&initrd_addr_max.to_le_bytes());
    bytes[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    bytes[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    bytes[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write");
    file
}

fn zero_page(memory: &GuestMemoryMmap) -> boot_params {
    memory
        .read_obj(GuestAddress(ZERO_PAGE_START))
        .expect("zero page")
}

fn cmdline_at(memory: &GuestMemoryMmap, params: &boot_params) -> String {
    let mut bytes = vec![0u8; params.hdr.cmdline_size as usize];
    memory
        .read_slice(&mut bytes, GuestAddress(u64::from(params.hdr.cmd_line_ptr)))
        .expect("cmdline");
    assert_eq!(bytes.pop(), Some(0), "NUL-terminated");
    String::from_utf8(bytes).expect("utf-8")
}

#[test]
fn an_elf_kernel_lands_at_its_physical_address_and_the_zero_page_describes_the_boot() {
    let payload = b"\xf4kernel";
    let kernel = file(&elf(0x100_0000, payload));
    let initrd = file(&[0x5a; 5000]);
    let memory = memory();
    let devices = [MmioAnnouncement {
        base: 0xd000_0000,
        irq: 5,
    }];
    let entry = load(
        &memory,
        &BootSpec {
            kernel: kernel.path(),
            initrd: Some(initrd.path()),
            cmdline: "console=ttyS0 reboot=k",
            memory: MEMORY,
            cpus: 2,
            devices: &devices,
            mmio_cmdline: true,
        },
    )
    .expect("boots");
    assert_eq!(entry.format, KernelFormat::Elf);
    assert_eq!(entry.entry, 0x100_0000);
    let mut loaded = [0u8; 7];
    memory
        .read_slice(&mut loaded, GuestAddress(0x100_0000))
        .expect("read");
    assert_eq!(&loaded, payload);

    let params = zero_page(&memory);
    assert_eq!(
        cmdline_at(&memory, &params),
        "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5"
    );
    // The initrd sits page-aligned at the top of memory, and its bytes are there.
    let (address, size) = entry.initrd.expect("initrd");
    assert_eq!(size, 5000);
    assert_eq!(address, (MEMORY - 5000) & !0xfff);
    assert_eq!(u64::from(params.hdr.ramdisk_image), address);
    assert_eq!({ params.hdr.ramdisk_size }, 5000);
    let byte: u8 = memory.read_obj(GuestAddress(address + 4999)).expect("read");
    assert_eq!(byte, 0x5a);
    assert_eq!(params.e820_entries, 3);
    assert_eq!(
        { params.e820_table[2].addr } + { params.e820_table[2].size },
        MEMORY
    );
    // Page tables and the MP table are in place.
    let pml4: u64 = memory.read_obj(GuestAddress(PML4_START)).expect("read");
    assert_eq!(pml4, 0xa003);
    let pde: u64 = memory.read_obj(GuestAddress(PD_START + 8)).expect("read");
    assert_eq!(pde, 0x20_0083);
    let mut mp = [0u8; 4];
    memory
        .read_slice(&mut mp, GuestAddress(MPTABLE_START))
        .expect("read");
    assert_eq!(&mp, b"_MP_");
    let code: u64 = memory
        .read_obj(GuestAddress(GDT_START + 0x10))
        .expect("read");
    assert_eq!(code, 0x00af_9b00_0000_ffff);
}

#[test]
fn a_bzimage_loads_at_one_mib_enters_at_0x200_and_keeps_its_header() {
    let kernel = file(&bzimage(XLF_KERNEL_64, 0x37ff_ffff, b"protected-mode"));
    let initrd = file(&[1; 100]);
    let memory = memory();
    let entry = load(
        &memory,
        &BootSpec {
            kernel: kernel.path(),
            initrd: Some(initrd.path()),
            cmdline: "console=ttyS0",
            memory: MEMORY,
            cpus: 1,
            devices: &[],
            mmio_cmdline: false,
        },
    )
    .expect("boots");
    assert_eq!(entry.format, KernelFormat::BzImage);
    assert_eq!(entry.entry, 0x10_0200);
    let mut loaded = [0u8; 14];
    memory
        .read_slice(&mut loaded, GuestAddress(0x10_0000))
        .expect("read");
    assert_eq!(&loaded, b"protected-mode");
    let params = zero_page(&memory);
    assert_eq!({ params.hdr.version }, 0x020f);
    assert_eq!(
        { params.hdr.kernel_alignment },
        0x20_0000,
        "the image's own"
    );
    assert_eq!({ params.hdr.type_of_loader }, 0xff);
    assert_eq!({ params.hdr.code32_start }, 0x10_0000);
    assert_eq!(cmdline_at(&memory, &params), "console=ttyS0");
    assert_eq!(entry.initrd, Some(((MEMORY - 100) & !0xfff, 100)));
}

#[test]
fn an_initrd_respects_the_kernels_initrd_addr_max() {
    let kernel = file(&bzimage(XLF_KERNEL_64, 0x1ff_ffff, b"k"));
    let initrd = file(&[1; 10]);
    let memory = memory();
    let entry = load(
        &memory,
        &BootSpec {
            kernel: kernel.path(),
            initrd: Some(initrd.path()),
            cmdline: "",
            memory: MEMORY,
            cpus: 1,
            devices: &[],
            mmio_cmdline: false,
        },
    )
    .expect("boots");
    assert_eq!(entry.initrd, Some((0x1ff_f000, 10)));
}

#[test]
fn a_32_bit_only_bzimage_and_an_unknown_file_are_refused_by_name() {
    let memory = memory();
    let spec = |path| BootSpec {
        kernel: path,
        initrd: None,
        cmdline: "",
        memory: MEMORY,
        cpus: 1,
        devices: &[],
        mmio_cmdline: false,
    };
    let old = file(&bzimage(0, 0, b"k"));
    let error = load(&memory, &spec(old.path())).expect_err("refused");
    assert!(matches!(error, BootError::Not64Bit { .. }), "{error}");
    let junk = file(&[0x90; 4096]);
    let error = load(&memory, &spec(junk.path())).expect_err("refused");
    assert!(matches!(error, BootError::UnknownFormat { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&junk.path().display().to_string())
    );
}

#[test]
fn initrd_placement_never_overlaps_the_kernel() {
    assert_eq!(
        initrd_address(0x1000, 0x20_0000, 0x400_0000),
        Some(0x3ff_f000)
    );
    assert_eq!(
        initrd_address(0x1001, 0x20_0000, 0x400_0000),
        Some(0x3ff_e000)
    );
    assert_eq!(initrd_address(0x400_0000, 0x20_0000, 0x400_0000), None);
    assert_eq!(initrd_address(0x10, 0x3ff_fff8, 0x400_0000), None);
}

#[test]
fn the_command_line_is_bounded_by_the_kernels_limit() {
    let long = "x".repeat(CMDLINE_MAX_SIZE);
    assert!(matches!(
        build_cmdline(&long, &[]),
        Err(BootError::Cmdline { .. })
    ));
}

#[test]
fn by_default_the_devices_are_announced_by_acpi_only_and_the_zero_page_points_at_it() {
    let kernel = file(&elf(0x100_0000, b"\xf4"));
    let memory = memory();
    let devices = [
        MmioAnnouncement {
            base: 0xd000_0000,
            irq: 5,
        },
        MmioAnnouncement {
            base: 0xd000_1000,
            irq: 6,
        },
    ];
    load(
        &memory,
        &BootSpec {
            kernel: kernel.path(),
            initrd: None,
            cmdline: "console=ttyS0",
            memory: MEMORY,
            cpus: 3,
            devices: &devices,
            mmio_cmdline: false,
        },
    )
    .expect("boots");
    let params = zero_page(&memory);
    assert_eq!(cmdline_at(&memory, &params), "console=ttyS0");
    assert_eq!({ params.acpi_rsdp_addr }, ACPI_START);
    // The ACPI region is reserved in the e820 map, between base and high memory.
    let acpi = params.e820_table[1];
    assert_eq!(
        ({ acpi.addr }, { acpi.size }, { acpi.r#type }),
        (0xe_0000, 0x2_0000, 2)
    );
    // The RSDP is in guest memory; its XSDT leads to the DSDT with both devices.
    let mut rsdp = [0u8; 36];
    memory
        .read_slice(&mut rsdp, GuestAddress(ACPI_START))
        .expect("read");
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    let xsdt = u64_at(&rsdp, 24);
    let fadt: u64 = memory.read_obj(GuestAddress(xsdt + 36)).expect("read");
    let dsdt: u64 = memory.read_obj(GuestAddress(fadt + 140)).expect("read");
    let length: u32 = memory.read_obj(GuestAddress(dsdt + 4)).expect("read");
    let mut table = vec![0u8; length as usize];
    memory
        .read_slice(&mut table, GuestAddress(dsdt))
        .expect("read");
    assert_eq!(table.windows(8).filter(|w| *w == b"LNRO0005").count(), 2);
}
