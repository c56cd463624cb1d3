//! What VirtualMachines need from the host: `qemu-system-x86_64` (the `qemu` hypervisor)
//! and `/dev/kvm` (hardware acceleration; without it QEMU guests need `accel: tcg` and
//! the builtin hypervisor cannot run).

use crate::drivers::probe::{Facility, blocking, tool_version};

/// The VirtualMachine kind's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let (kvm, qemu) = tokio::join!(
        blocking("kvm", kvm),
        tool_version("qemu-system-x86_64", &["--version"])
    );
    let qemu = match qemu {
        Ok(version) => Facility::ok("qemu", version),
        Err(error) => Facility::missing(
            "qemu",
            error.to_string(),
            "install QEMU (Debian: apt install qemu-system-x86)",
        ),
    };
    vec![kvm, qemu]
}

fn kvm() -> Facility {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Facility::ok("kvm", "/dev/kvm opens read-write"),
        Err(error) => Facility::warn(
            "kvm",
            format!(
                "/dev/kvm: {error}; QEMU guests need accel: tcg, hypervisor: builtin cannot run"
            ),
            "enable virtualisation (VT-x/AMD-V) and load kvm_intel or kvm_amd, or declare accel: tcg",
        ),
    }
}
