//! The QEMU backend: the `qemu-system-x86_64` command line for a [`Launch`].
//!
//! Choices, and why:
//! - `-machine q35` with `-nodefaults -no-user-config`: only the devices gitvisor asks
//!   for exist, nothing comes from a host-wide config file.
//! - Disks are `virtio-blk-pci` with a stable serial (`disk0`, `disk1`, …; the cloud-init
//!   seed is `cidata`); formats are explicit, never probed. The first disk gets
//!   `bootindex=0` for firmware boot. A CD-ROM sits on the q35's AHCI controller
//!   (`ide-cd` on bus `ide.0`, which is an AHCI port: q35 has no IDE controller).
//! - NICs are `virtio-net-pci` on the tap gitvisor created (`ifname=`, `script=no`,
//!   `downscript=no`: QEMU configures nothing on the host).
//! - The serial console is a chardev socket (server, no wait) with a log file, so output
//!   is logged whether or not `gitvisor console` is attached.
//! - Control is QMP on a unix socket; `-pidfile` (QEMU locks it, so a second QEMU for the
//!   same run dir refuses to start) and `-daemonize`: QEMU detaches only once its devices
//!   are set up, so a non-zero exit with its message on stderr is a failed launch.
//! - `-S` starts a `Paused` VM with its vCPUs stopped.
//!
//! Values inside an option are escaped QEMU's way (a `,` doubled), so a path with a
//! comma is one value, not a second option.

use super::Backend;
use crate::drivers::vm::launch::{Launch, LaunchBoot, ResolvedAccel};
use crate::drivers::vm::{Hypervisor, VirtualMachineSpec};

/// The QEMU binary.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBackend {
    program: String,
}

impl Default for QemuBackend {
    fn default() -> Self {
        QemuBackend {
            program: QEMU_PROGRAM.to_owned(),
        }
    }
}

/// A value inside a QEMU option list: commas doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn path(value: &std::path::Path) -> String {
    escape(&value.to_string_lossy())
}

impl Backend for QemuBackend {
    fn hypervisor(&self) -> Hypervisor {
        Hypervisor::Qemu
    }

    fn command_line(&self, launch: &Launch) -> Vec<String> {
        let paths = &launch.paths;
        let mut argv: Vec<String> = vec![self.program.clone()];
        let mut arg = |option: &str, value: String| {
            argv.push(option.to_owned());
            argv.push(value);
        };
        arg(
            "-name",
            format!("guest={},process=gitvisor-vm-{}", launch.name, launch.name),
        );
        let (accel, cpu) = match launch.accel {
            ResolvedAccel::Kvm => ("kvm", "host"),
            ResolvedAccel::Tcg => ("tcg", "max"),
        };
        arg("-machine", format!("q35,accel={accel}"));
        arg("-cpu", cpu.to_owned());
        arg("-smp", launch.cpus.to_string());
        arg("-m", format!("{}M", launch.memory_mib));
        match &launch.boot {
            LaunchBoot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                arg("-kernel", kernel.clone());
                if let Some(initrd) = initrd {
                    arg("-initrd", initrd.clone());
                }
                if let Some(cmdline) = cmdline {
                    arg("-append", cmdline.clone());
                }
            }
            LaunchBoot::Bios => {}
            LaunchBoot::Uefi { code, .. } => {
                arg(
                    "-drive",
                    format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        path(code)
                    ),
                );
                arg(
                    "-drive",
                    format!("if=pflash,format=raw,unit=1,file={}", path(&paths.nvram())),
                );
            }
        }
        let firmware = !matches!(launch.boot, LaunchBoot::Kernel { .. });
        for (index, disk) in launch.disks.iter().enumerate() {
            arg(
                "-drive",
                format!(
                    "file={},if=none,id=disk{index},format={},readonly={}",
                    escape(&disk.path),
                    disk.format.as_str(),
                    if disk.read_only { "on" } else { "off" }
                ),
            );
            let boot = if firmware && index == 0 {
                ",bootindex=0"
            } else {
                ""
            };
            arg(
                "-device",
                format!(
                    "virtio-blk-pci,drive=disk{index},serial={}{boot}",
                    escape(&disk.serial)
                ),
            );
        }
        if launch.seed {
            arg(
                "-drive",
                format!(
                    "file={},if=none,id=seed,format=raw,readonly=on",
                    path(&paths.seed())
                ),
            );
            arg(
                "-device",
                format!(
                    "virtio-blk-pci,drive=seed,serial={}",
                    crate::drivers::vm::seed::SEED_SERIAL
                ),
            );
        }
        if let Some(iso) = &launch.cdrom {
            arg(
                "-drive",
                format!(
                    "file={},if=none,id=cdrom,media=cdrom,readonly=on",
                    escape(iso)
                ),
            );
            let boot = if firmware { ",bootindex=1" } else { "" };
            arg("-device", format!("ide-cd,bus=ide.0,drive=cdrom{boot}"));
        }
        for (index, nic) in launch.nics.iter().enumerate() {
            arg(
                "-netdev",
                format!(
                    "tap,id=net{index},ifname={},script=no,downscript=no",
                    escape(&nic.tap)
                ),
            );
            arg(
                "-device",
                format!("virtio-net-pci,netdev=net{index},mac={}", nic.mac),
            );
        }
        let serial = if launch.serial_socket {
            format!(
                "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
                path(&paths.serial_socket()),
                path(&launch.serial_log)
            )
        } else {
            format!(
                "file,id=serial0,path={},append=on",
                path(&launch.serial_log)
            )
        };
        arg("-chardev", serial);
        arg("-serial", "chardev:serial0".to_owned());
        arg(
            "-chardev",
            format!(
                "socket,id=qmp,path={},server=on,wait=off",
                path(&paths.monitor(Hypervisor::Qemu))
            ),
        );
        arg("-mon", "chardev=qmp,mode=control".to_owned());
        if launch.vnc {
            arg("-vga", "std".to_owned());
            arg("-vnc", format!("unix:{}", path(&paths.vnc())));
        } else {
            arg("-display", "none".to_owned());
        }
        arg("-pidfile", path(&paths.pid()));
        argv.extend(["-nodefaults", "-no-user-config", "-daemonize"].map(String::from));
        if launch.paused {
            argv.push("-S".to_owned());
        }
        argv
    }

    fn unsupported(&self, _spec: &VirtualMachineSpec) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::contract::PlanContext;
    use crate::drivers::vm::launch::{HostFacts, UefiFirmware};

    fn launch(yaml: &str, host: &HostFacts) -> Launch {
        let spec = serde_yaml::from_str(yaml).expect("test spec parses");
        Launch::resolve(
            "vm1",
            &spec,
            &PlanContext::default(),
            host,
            &crate::drivers::vm::VmRoots::new(
                Path::new("/run/gitvisor"),
                Path::new("/var/lib/gitvisor"),
            ),
        )
        .expect("resolves")
    }

    #[test]
    fn a_direct_boot_vm_with_a_disk_a_nic_and_a_seed() {
        let argv = QemuBackend::default().command_line(&launch(
            "cpus: 2\nmemory: 512MiB\naccel: tcg\n\
             boot: {kernel: /boot/vmlinuz, initrd: /boot/initrd, cmdline: console=ttyS0 quiet}\n\
             disks: [{path: \"/images/a,b.img\"}]\n\
             networks: [{bridge: br0, mac: \"52:54:00:00:00:01\"}]\n\
             cloudInit: {userData: x}",
            &HostFacts::default(),
        ));
        let tap = crate::drivers::vm::nic::tap_name("vm1", 0);
        let expected = [
            "qemu-system-x86_64",
            "-name",
            "guest=vm1,process=gitvisor-vm-vm1",
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "512M",
            "-kernel",
            "/boot/vmlinuz",
            "-initrd",
            "/boot/initrd",
            "-append",
            "console=ttyS0 quiet",
            "-drive",
            "file=/images/a,,b.img,if=none,id=disk0,format=raw,readonly=off",
            "-device",
            "virtio-blk-pci,drive=disk0,serial=disk0",
            "-drive",
            "file=/run/gitvisor/vm/vm1/seed.img,if=none,id=seed,format=raw,readonly=on",
            "-device",
            "virtio-blk-pci,drive=seed,serial=cidata",
            "-netdev",
            &format!("tap,id=net0,ifname={tap},script=no,downscript=no"),
            "-device",
            "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01",
            "-chardev",
            "socket,id=serial0,path=/run/gitvisor/vm/vm1/serial.sock,server=on,wait=off,logfile=/run/gitvisor/vm/vm1/serial.log,logappend=on",
            "-serial",
            "chardev:serial0",
            "-chardev",
            "socket,id=qmp,path=/run/gitvisor/vm/vm1/qmp.sock,server=on,wait=off",
            "-mon",
            "chardev=qmp,mode=control",
            "-display",
            "none",
            "-pidfile",
            "/run/gitvisor/vm/vm1/pid",
            "-nodefaults",
            "-no-user-config",
            "-daemonize",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn uefi_boots_the_first_disk_with_the_vms_own_variable_store() {
        let host = HostFacts {
            kvm: true,
            uefi: Some(UefiFirmware {
                code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                vars: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
            }),
            memory: None,
        };
        let argv = QemuBackend::default().command_line(&launch(
            "memory: 1GiB\nboot: {firmware: uefi}\ndisks: [{path: /a.qcow2}]\ncdrom: /iso/install.iso\ngraphics: vnc\nstate: Paused\nconsole: {socket: false}",
            &host,
        ));
        let text = argv.join(" ");
        for expected in [
            "-machine q35,accel=kvm -cpu host",
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "-drive if=pflash,format=raw,unit=1,file=/var/lib/gitvisor/vm/vm1/OVMF_VARS.fd",
            "format=qcow2,readonly=off -device virtio-blk-pci,drive=disk0,serial=disk0,bootindex=0",
            "-drive file=/iso/install.iso,if=none,id=cdrom,media=cdrom,readonly=on -device ide-cd,bus=ide.0,drive=cdrom,bootindex=1",
            "-chardev file,id=serial0,path=/run/gitvisor/vm/vm1/serial.log,append=on",
            "-vga std -vnc unix:/run/gitvisor/vm/vm1/vnc.sock",
        ] {
            assert!(text.contains(expected), "{expected}\nnot in\n{text}");
        }
        assert_eq!(argv.last().map(String::as_str), Some("-S"));
        assert!(!text.contains("-kernel"));
    }
}
