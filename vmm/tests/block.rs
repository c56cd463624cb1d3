//! End to end: a test guest drives the virtio-mmio block device through a real virtqueue
//! against a real file: id, read, write, flush, read back, and an out-of-range read.

mod common;

use std::io::Write;

use common::{Vmm, build_guest, can_run, wait_until};

fn disk(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("disk.raw");
    let mut file = std::fs::File::create(&path).expect("disk");
    let mut sector = [0u8; 512];
    sector[..20].copy_from_slice(b"hello from the disk\n");
    file.write_all(&sector).expect("sector 0");
    file.write_all(&[0xee; 512 * 7]).expect("rest");
    path
}

fn run(read_only: bool) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("block", dir.path());
    let path = disk(dir.path());
    let spec = format!(
        "path={},id=test-disk{}",
        path.display(),
        if read_only { ",readonly=on" } else { "" }
    );
    let mut vmm = Vmm::start(&guest, dir, &["--disk", &spec]);
    let status = vmm.wait();
    assert!(status.success(), "exit {status:?}; log:\n{}", vmm.log());
    let serial = vmm.serial();
    assert!(
        serial.ends_with("block done\n"),
        "serial:\n{serial}\nlog:\n{}",
        vmm.log()
    );
    (serial, std::fs::read(&path).expect("read disk"))
}

#[test]
fn a_guest_reads_and_writes_a_raw_file_through_the_virtqueue() {
    if !can_run("a_guest_reads_and_writes_a_raw_file_through_the_virtqueue") {
        return;
    }
    let (serial, contents) = run(false);
    assert_eq!(
        serial,
        "capacity: 8\nread-only: 0\nid status: 0\nid: test-disk\nread status: 0\n\
         sector0: hello from the disk\nwrite status: 0\nflush status: 0\nread status: 0\n\
         sector1: written-by-the-guest\npast-end status: 1\nblock done\n"
    );
    assert_eq!(&contents[512..533], b"written-by-the-guest\n");
    assert!(contents[533..1024].iter().all(|byte| *byte == 0));
    assert!(contents[1024..].iter().all(|byte| *byte == 0xee));
}

#[test]
fn a_read_only_disk_refuses_the_guests_write() {
    if !can_run("a_read_only_disk_refuses_the_guests_write") {
        return;
    }
    let (serial, contents) = run(true);
    assert!(serial.contains("read-only: 1\n"), "{serial}");
    assert!(serial.contains("write status: 1\n"), "{serial}");
    assert!(
        serial.contains("sector0: hello from the disk\n"),
        "{serial}"
    );
    // Sector 1 still holds the disk's bytes, not the guest's.
    assert!(!serial.contains("written-by-the-guest"), "{serial}");
    assert!(contents[512..1024].iter().all(|byte| *byte == 0xee));
}

/// The names of the VMM process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| task.ok())
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn each_disk_gets_an_io_thread_of_its_own_beside_the_vcpus() {
    if !can_run("each_disk_gets_an_io_thread_of_its_own_beside_the_vcpus") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("shutdown", dir.path());
    let path = disk(dir.path());
    let spec = format!("path={}", path.display());
    let second = format!("path={},readonly=on", path.display());
    let mut vmm = Vmm::start(&guest, dir, &["--disk", &spec, "--disk", &second]);
    vmm.wait_for_serial("waiting for the power button or ctrl-alt-del");
    // A thread names itself once it runs: wait for the names rather than race them.
    let pid = vmm.child.id();
    let has_all = || {
        let names = thread_names(pid);
        ["disk0-io", "disk1-io", "vcpu0"]
            .iter()
            .all(|wanted| names.iter().any(|name| name == wanted))
    };
    wait_until(has_all, || format!("threads: {:?}", thread_names(pid)));
}
