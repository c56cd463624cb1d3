//! `gitvisor-vmm --memory` beyond the host's RAM and swap is refused before KVM is opened
//! or anything is mapped (exit 2, the reason on stderr); `--overcommit` lets it through to
//! the next check. Runs without KVM: the refusal comes first.

use std::process::Command;

use gitvisor_vmm::config::MAX_MEMORY_MIB;
use gitvisor_vmm::host_memory::HostMemory;

fn vmm(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gitvisor-vmm"))
        .args(["--kernel", "/nonexistent/vmlinux", "--memory"])
        .arg(MAX_MEMORY_MIB.to_string())
        .args(extra)
        .output()
        .expect("run gitvisor-vmm")
}

#[test]
fn a_guest_larger_than_the_hosts_ram_and_swap_is_refused_unless_overcommitted() {
    let host = HostMemory::read().expect("/proc/meminfo");
    assert!(
        host.ram + host.swap < MAX_MEMORY_MIB << 20,
        "this host has {host}: the largest guest fits, so the refusal cannot be shown here"
    );
    let refused = vmm(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{MAX_MEMORY_MIB} MiB of guest memory is more than this host can back ({host})"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--overcommit"), "{stderr}");

    let overcommitted = vmm(&["--overcommit"]);
    let stderr = String::from_utf8_lossy(&overcommitted.stderr);
    assert_ne!(overcommitted.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("can back"), "{stderr}");
}
