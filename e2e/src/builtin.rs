//! What the `hypervisor: builtin` tests need besides the VM helpers of [`crate::vms`]:
//! the guest (`e2e/guests/builtin.c`, linked with the VMM's own test-guest entry code,
//! header and linker script from `vmm/guests/`, built with the host's gcc), the
//! `gitvisor-vmm` binary the gitvisor under test will find next to itself, and a client
//! of the VMM's control socket that reads it independently of gitvisor.
//!
//! The guest is not Linux: this machine's `/dev/kvm` runs small guest programs but not
//! stock kernels, so these tests check gitvisor's side (launch, observe, status,
//! console, stop, prune, taps) on a guest that talks on the serial port and answers
//! the ACPI power button like a Linux guest running acpid. Debian's kernel boots on
//! `hypervisor: builtin` one level down, on a nested KVM: [`crate::kvm`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::locate::{gitvisor_bin, workspace_root};

/// Why the builtin tests cannot run here, if they cannot.
pub fn missing_facility() -> Option<String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Some("/dev/kvm cannot be opened read-write".into());
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        return Some("gcc is not installed (it builds the test guest)".into());
    }
    let vmm = vmm_beside_gitvisor();
    if !vmm.is_file() {
        return Some(format!(
            "{} does not exist; build it with `cargo build --workspace` (gitvisor finds gitvisor-vmm next to itself)",
            vmm.display()
        ));
    }
    None
}

/// Where the gitvisor under test finds the VMM.
pub fn vmm_beside_gitvisor() -> PathBuf {
    gitvisor_bin().with_file_name("gitvisor-vmm")
}

/// Builds the builtin test guest into `dir`; panics with gcc's message on failure.
pub fn build_guest(dir: &Path) -> PathBuf {
    let root = workspace_root();
    let shared = root.join("vmm").join("guests");
    let output = dir.join("builtin-guest.elf");
    let result = Command::new("gcc")
        // The flags every test guest is built with (`gcc.flags`, read by gcc itself).
        .arg(format!("@{}", shared.join("gcc.flags").display()))
        .arg(format!("-I{}", shared.display()))
        .arg(format!("-Wl,-T,{}", shared.join("guest.ld").display()))
        .arg(shared.join("start.S"))
        .arg(root.join("e2e").join("guests").join("builtin.c"))
        .arg("-o")
        .arg(&output)
        .output()
        .expect("cannot run gcc");
    assert!(
        result.status.success(),
        "building the builtin test guest failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

/// Sends `{"command":"<command>"}` to the VMM's control socket and returns its answer
/// line, as JSON.
pub fn vmm_api(socket: &Path, command: &str) -> Result<serde_json::Value, String> {
    let stream =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    (&stream)
        .write_all(format!("{{\"command\":\"{command}\"}}\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))
}

/// The executable of process `pid` (`/proc/PID/exe`).
pub fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}
