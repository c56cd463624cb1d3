//! End to end: the real `gitvisor-vmm` boots test guests through its 64-bit Linux boot
//! path; the guests print on COM1 and reset through the i8042.

mod common;

use common::{Vmm, build_guest, can_run};

#[test]
fn a_guest_prints_on_the_serial_port_and_its_reset_ends_the_vmm_cleanly() {
    if !can_run("a_guest_prints_on_the_serial_port_and_its_reset_ends_the_vmm_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("serial_reset", dir.path());
    let mut vmm = Vmm::start(&guest, dir, &[]);
    let status = vmm.wait();
    assert!(status.success(), "exit {status:?}; log:\n{}", vmm.log());
    assert_eq!(vmm.serial(), "gitvisor-guest: hello\n");
    assert!(
        vmm.log()
            .contains("exiting: the guest reset the machine (i8042)"),
        "{}",
        vmm.log()
    );
}

#[test]
fn the_guest_starts_in_long_mode_with_the_boot_protocols_zero_page() {
    if !can_run("the_guest_starts_in_long_mode_with_the_boot_protocols_zero_page") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("boot_info", dir.path());
    let mut vmm = Vmm::start(
        &guest,
        dir,
        &["--cmdline", "console=ttyS0 gitvisor.test=1", "--cpus", "3"],
    );
    let status = vmm.wait();
    assert!(status.success(), "exit {status:?}; log:\n{}", vmm.log());
    let serial = vmm.serial();
    let line = |prefix: &str| -> String {
        serial
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{serial}"))
            .to_string()
    };
    assert_eq!(line("zero page:"), "zero page: 0x7000");
    // EFER: LME (bit 8) and LMA (bit 10) set: long mode is active.
    let efer = u64::from_str_radix(line("efer:").trim_start_matches("efer: 0x"), 16).expect("hex");
    assert_eq!(efer & 0x500, 0x500, "{serial}");
    assert_eq!(line("cs:"), "cs: 0x10 ds: 0x18");
    assert!(line("cr0:").contains("cr3: 0x9000"), "{serial}");
    assert_eq!(
        line("header:"),
        "header: HdrS boot_flag: 0xaa55 loader: 0xff"
    );
    // The default boot arguments first, then the given command line.
    assert_eq!(
        line("cmdline:"),
        format!(
            "cmdline: {} console=ttyS0 gitvisor.test=1",
            gitvisor_vmm::config::DEFAULT_BOOT_ARGS
        )
    );
    let e820: Vec<&str> = serial.lines().filter(|l| l.starts_with("e820:")).collect();
    assert_eq!(
        e820,
        vec![
            "e820: 0x0 0x9fc00 1",
            "e820: 0xe0000 0x20000 2",
            "e820: 0x100000 0x3f00000 1"
        ],
        "{serial}"
    );
    assert_eq!(line("mptable cpus:"), "mptable cpus: 3");
    assert!(serial.ends_with("boot-info done\n"), "{serial}");
}

#[test]
fn every_vcpu_in_the_mp_table_starts_when_the_guest_sends_init_and_sipi() {
    if !can_run("every_vcpu_in_the_mp_table_starts_when_the_guest_sends_init_and_sipi") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("smp", dir.path());
    let mut vmm = Vmm::start(&guest, dir, &["--cpus", "4"]);
    let status = vmm.wait();
    assert!(status.success(), "exit {status:?}; log:\n{}", vmm.log());
    assert_eq!(
        vmm.serial(),
        "mptable cpus: 4\napplication processors up: 3\n"
    );
}
