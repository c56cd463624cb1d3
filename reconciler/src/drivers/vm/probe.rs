//! What VirtualMachines need from the host: `qemu-system-x86_64` (the `qemu` hypervisor),
//! `/dev/kvm` (hardware acceleration; without it QEMU guests need `accel: tcg` and
//! the builtin hypervisor cannot run), `gitvisor-vmm` (the `builtin` hypervisor: found
//! where the driver finds it, its version, and whether KVM lets it run), `/dev/net/tun`
//! (taps for NICs) and OVMF (for `firmware: uefi`).

use crate::drivers::probe::{Facility, blocking, tool_version};

/// The VirtualMachine kind's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let (kvm, qemu, builtin, tun, ovmf) = tokio::join!(
        blocking("kvm", kvm),
        tool_version("qemu-system-x86_64", &["--version"]),
        builtin(),
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
    vec![kvm, qemu, builtin, tun, ovmf]
}

/// Whether `hypervisor: builtin` can run: gitvisor-vmm found (next to gitvisor, else on
/// PATH), its version, and /dev/kvm usable.
async fn builtin() -> Facility {
    let backend = super::backend::BuiltinBackend::locate();
    let program = match backend.program() {
        Ok(program) => program.to_string_lossy().into_owned(),
        Err(why) => {
            return Facility::warn(
                "builtin",
                format!("{why}; VMs with hypervisor: builtin cannot start"),
                "install gitvisor-vmm next to the gitvisor executable (cargo build --workspace builds both)",
            );
        }
    };
    let version = match tool_version(&program, &["--version"]).await {
        Ok(version) => version,
        Err(error) => {
            return Facility::warn(
                "builtin",
                format!("{program} does not run: {error}"),
                "reinstall gitvisor-vmm from the same build as gitvisor",
            );
        }
    };
    if kvm_opens() {
        Facility::ok(
            "builtin",
            format!("{version} at {program}, /dev/kvm usable"),
        )
    } else {
        Facility::warn(
            "builtin",
            format!(
                "{version} at {program}, but /dev/kvm cannot be opened: hypervisor: builtin cannot run"
            ),
            "enable virtualisation (VT-x/AMD-V), load kvm_intel or kvm_amd and run gitvisor as root",
        )
    }
}

fn kvm_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
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
