//! What VirtualMachines need from the host: `qemu-system-x86_64` (the `qemu` hypervisor),
//! `/dev/kvm` (hardware acceleration; without it QEMU guests need `accel: tcg` and
//! the builtin hypervisor cannot run), `/dev/net/tun` (taps for NICs) and OVMF (for
//! `firmware: uefi`).

use crate::drivers::probe::{Facility, blocking, tool_version};

/// The VirtualMachine kind's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let (kvm, qemu, tun, ovmf) = tokio::join!(
        blocking("kvm", kvm),
        tool_version("qemu-system-x86_64", &["--version"]),
        blocking("tun", tun),
        blocking("ovmf", ovmf)
    );
    let qemu = match qemu {
        Ok(version) => Facility::ok("qemu", version),
        Err(error) => Facility::missing(
            "qemu",
            error.to_string(),
            "install QEMU (Debian: apt install qemu-system-x86)",
        ),
    };
    vec![kvm, qemu, tun, ovmf]
}

fn tun() -> Facility {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Facility::ok("tun", "/dev/net/tun opens read-write (taps for NICs)"),
        Err(error) => Facility::missing(
            "tun",
            format!("/dev/net/tun: {error}; VMs with networks cannot get their taps"),
            "load the tun module (modprobe tun) and run gitvisor as root",
        ),
    }
}

fn ovmf() -> Facility {
    let found = super::launch::UEFI_CANDIDATES.iter().find(|(code, vars)| {
        std::path::Path::new(code).is_file() && std::path::Path::new(vars).is_file()
    });
    match found {
        Some((code, _)) => Facility::ok("ovmf", format!("UEFI firmware at {code}")),
        None => Facility::warn(
            "ovmf",
            "no OVMF firmware found; VMs with firmware: uefi cannot start",
            "install OVMF (Debian: apt install ovmf)",
        ),
    }
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
