//! End to end: the ACPI tables as a guest finds them in its memory (RSDP from the zero
//! page and by the legacy scan, checksums, XSDT → FADT → DSDT, the MADT's CPUs, the
//! devices' windows answering with the virtio magic), `poweroff` and ACPI reset through
//! the FADT's registers ending the VMM cleanly; and the tables as ACPICA's disassembler
//! (`iasl -d`, Debian's acpica-tools) decodes them.

mod common;

use std::process::Command;

use common::{Vmm, build_guest, can_run};
use gitvisor_vmm::acpi::{self, AcpiTables};
use gitvisor_vmm::boot::MmioAnnouncement;
use gitvisor_vmm::layout::{ACPI_START, virtio_mmio_slot};

fn disk(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, [0u8; 4096]).expect("disk");
    format!("path={}", path.display())
}

/// Runs the acpi guest with `cmdline` on 3 vCPUs and two disks; returns the VMM after
/// it exited successfully.
fn run(test: &str, cmdline: &str) -> Option<Vmm> {
    if !can_run(test) {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("acpi", dir.path());
    let first = disk(dir.path(), "a.raw");
    let second = disk(dir.path(), "b.raw");
    let mut vmm = Vmm::start(
        &guest,
        dir,
        &[
            "--cpus",
            "3",
            "--cmdline",
            cmdline,
            "--disk",
            &first,
            "--disk",
            &second,
        ],
    );
    let status = vmm.wait();
    assert!(
        status.success(),
        "exit {status:?}; serial:\n{}\nlog:\n{}",
        vmm.serial(),
        vmm.log()
    );
    Some(vmm)
}

const WALK: &str = "\
rsdp: 0xe0000 scan: 0xe0000
xsdt entry: FACP
xsdt entry: APIC
madt cpus: 3 ioapic: 0xfec00000
fadt hw-reduced: 1 reset-reg: 1
sleep control: 0x600 space 1 status: 0x601 reset: 0x602 value 0x1
s5 slp_typ: 5
device: base 0xd0000000 irq 5 flags 0x3 magic virt id 2
device: base 0xd0001000 irq 6 flags 0x3 magic virt id 2
lnro0005 devices: 2
";

#[test]
fn a_guest_finds_the_rsdp_and_walks_checksummed_tables_to_its_devices() {
    let Some(vmm) = run(
        "a_guest_finds_the_rsdp_and_walks_checksummed_tables_to_its_devices",
        "console=ttyS0",
    ) else {
        return;
    };
    assert_eq!(vmm.serial(), format!("{WALK}acpi done\n"));
}

#[test]
fn a_guest_poweroff_through_the_acpi_sleep_register_ends_the_vmm_cleanly() {
    let Some(vmm) = run(
        "a_guest_poweroff_through_the_acpi_sleep_register_ends_the_vmm_cleanly",
        "poweroff",
    ) else {
        return;
    };
    assert_eq!(vmm.serial(), format!("{WALK}powering off\n"));
    assert!(
        vmm.log()
            .contains("exiting: the guest powered off (ACPI S5)"),
        "{}",
        vmm.log()
    );
}

#[test]
fn a_guest_reset_through_the_acpi_reset_register_ends_the_vmm_cleanly() {
    let Some(vmm) = run(
        "a_guest_reset_through_the_acpi_reset_register_ends_the_vmm_cleanly",
        "acpi-reset",
    ) else {
        return;
    };
    assert_eq!(vmm.serial(), format!("{WALK}resetting\n"));
    assert!(
        vmm.log()
            .contains("exiting: the guest reset the machine (ACPI reset register)"),
        "{}",
        vmm.log()
    );
}

fn table(tables: &AcpiTables, address: u64) -> &[u8] {
    let bytes = &tables.bytes[(address - ACPI_START) as usize..];
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4")) as usize;
    &bytes[..len]
}

/// `iasl -d` on one table; its output with runs of whitespace collapsed to one space.
fn disassemble(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let input = dir.join(format!("{name}.dat"));
    std::fs::write(&input, bytes).expect("write table");
    let output = Command::new("iasl")
        .arg("-d")
        .arg(&input)
        .current_dir(dir)
        .output()
        .expect("run iasl");
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap_or_default();
    assert!(
        output.status.success(),
        "iasl -d {name}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        dsl
    );
    assert!(!dsl.contains("Incorrect checksum"), "{dsl}");
    dsl.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn has(dsl: &str, text: &str) {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(dsl.contains(&text), "{text:?} not in:\n{dsl}");
}

#[test]
fn acpicas_disassembler_decodes_the_tables_as_intended() {
    if Command::new("iasl").arg("-v").output().is_err() {
        common::skip(
            "acpicas_disassembler_decodes_the_tables_as_intended",
            "iasl is not installed (Debian: acpica-tools)",
        );
        return;
    }
    let devices: Vec<MmioAnnouncement> = (0..2)
        .map(|index| {
            let (base, irq) = virtio_mmio_slot(index);
            MmioAnnouncement { base, irq }
        })
        .collect();
    let tables = acpi::build(2, &devices).expect("tables");
    let dir = tempfile::tempdir().expect("temp dir");

    let dsdt = disassemble(dir.path(), "dsdt", table(&tables, tables.dsdt));
    has(
        &dsdt,
        r#"DefinitionBlock ("", "DSDT", 2, "GITVSR", "GVMMDSDT", 0x00000001)"#,
    );
    has(
        &dsdt,
        r#"Device (V001) { Name (_HID, "LNRO0005") // _HID: Hardware ID
           Name (_UID, One) // _UID: Unique ID
           Name (_CCA, One) // _CCA: Cache Coherency Attribute
           Name (_CRS, ResourceTemplate () // _CRS: Current Resource Settings
           { Memory32Fixed (ReadWrite, 0xD0001000, // Address Base
             0x00001000, // Address Length
             )
             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000006, } }) }"#,
    );
    has(&dsdt, r#"Device (V000) { Name (_HID, "LNRO0005")"#);
    has(&dsdt, "0xD0000000, // Address Base");
    has(&dsdt, r#"Device (COM1) { Name (_HID, EisaId ("PNP0501")"#);
    has(&dsdt, "0x03F8, // Range Minimum");
    has(&dsdt, "IRQNoFlags () {4}");
    has(&dsdt, r#"Device (PS2K) { Name (_HID, EisaId ("PNP0303")"#);
    has(&dsdt, "IRQNoFlags () {1}");
    has(
        &dsdt,
        r#"Device (PWRB) { Name (_HID, EisaId ("PNP0C0C") /* Power Button Device */)"#,
    );
    has(
        &dsdt,
        r#"Device (GED0) { Name (_HID, "ACPI0013" /* Generic Event Device */) // _HID: Hardware ID
           Name (_UID, Zero) // _UID: Unique ID
           Name (_CRS, ResourceTemplate () // _CRS: Current Resource Settings
           { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000003, } })
           OperationRegion (GDST, SystemIO, 0x0603, One)
           Field (GDST, ByteAcc, NoLock, Preserve) { GDAT, 8 }
           Method (_EVT, 1, Serialized) // _EVT: Event
           { Local0 = GDAT /* \_SB_.GED0.GDAT */
             If ((Local0 & One)) { Notify (\_SB.PWRB, 0x80) // Status Change } } }"#,
    );
    has(
        &dsdt,
        "Name (_S5, Package (0x04) // _S5_: S5 System State { 0x05, Zero, Zero, Zero })",
    );

    let fadt = disassemble(dir.path(), "facp", table(&tables, tables.fadt));
    has(&fadt, "Revision : 06");
    has(&fadt, "FADT Minor Revision : 05");
    has(&fadt, "8042 Present on ports 60/64 (V2) : 1");
    has(&fadt, "CMOS RTC Not Present (V5) : 1");
    has(&fadt, "Reset Register Supported (V2) : 1");
    has(&fadt, "Hardware Reduced (V5) : 1");
    has(
        &fadt,
        "Reset Register : [Generic Address Structure] [074h 0116 1] Space ID : 01 [SystemIO] \
         [075h 0117 1] Bit Width : 08 [076h 0118 1] Bit Offset : 00 \
         [077h 0119 1] Encoded Access Width : 01 [Byte Access:8] \
         [078h 0120 8] Address : 0000000000000602 [080h 0128 1] Value to cause reset : 01",
    );
    has(
        &fadt,
        &format!("[08Ch 0140 8] DSDT Address : {:016X}", tables.dsdt),
    );
    has(
        &fadt,
        "Sleep Control Register : [Generic Address Structure] [0F4h 0244 1] Space ID : 01 [SystemIO]",
    );
    has(&fadt, "[0F8h 0248 8] Address : 0000000000000600");
    has(
        &fadt,
        "Sleep Status Register : [Generic Address Structure] [100h 0256 1] Space ID : 01 [SystemIO]",
    );
    has(&fadt, "[104h 0260 8] Address : 0000000000000601");
    has(&fadt, r#"Hypervisor ID : 524F534956544947"#);

    let madt = disassemble(dir.path(), "apic", table(&tables, tables.madt));
    has(&madt, "Local Apic Address : FEE00000");
    assert_eq!(
        madt.matches("Subtable Type : 00 [Processor Local APIC]")
            .count(),
        2,
        "{madt}"
    );
    has(
        &madt,
        "Processor ID : 01 [037h 0055 1] Local Apic ID : 01 [038h 0056 4] Flags (decoded below) : 00000001 Processor Enabled : 1",
    );
    has(
        &madt,
        "Subtable Type : 01 [I/O APIC] [03Dh 0061 1] Length : 0C [03Eh 0062 1] I/O Apic ID : 02",
    );
    has(&madt, "Address : FEC00000");
    has(&madt, "Subtable Type : 04 [Local APIC NMI]");
    has(&madt, "Interrupt Input LINT : 01");

    let xsdt = disassemble(dir.path(), "xsdt", table(&tables, tables.xsdt));
    has(
        &xsdt,
        &format!(
            "ACPI Table Address 0 : {:016X} [02Ch 0044 8] ACPI Table Address 1 : {:016X}",
            tables.fadt, tables.madt
        ),
    );
}
