//! [`Launch`]: everything a backend needs to start one VM, resolved from its spec, the
//! rest of the revision (a disk's Volume) and what observe found on the host (whether
//! KVM works, where the UEFI firmware is). Pure: no I/O, so the command line a plan
//! implies is the one apply launches.

use crate::drivers::volume::VolumeSpec;
use crate::drivers::volume::share::on_share;
use std::path::PathBuf;

use super::nic::{mac_address, tap_name};
use super::paths::{RunPaths, VmRoots};
use crate::contract::PlanContext;
use crate::drivers::vm::{Accel, DiskFormat, Firmware, Graphics, VirtualMachineSpec, VmState};
use crate::model::{ByteSize, Kind, MacAddress, OVERCOMMIT_ANNOTATION};

/// Host facts a launch depends on, read by observe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// `/dev/kvm` opens read-write.
    pub kvm: bool,
    /// The UEFI firmware (OVMF) found on this host, if any.
    pub uefi: Option<UefiFirmware>,
    /// RAM plus swap (`MemTotal + SwapTotal` of `/proc/meminfo`), in bytes; `None` when
    /// it could not be read (nothing is checked then).
    pub memory: Option<u64>,
}

impl HostFacts {
    /// Why a guest of `bytes` cannot be backed here, unless `overcommit`: more memory
    /// than RAM and swap together, which QEMU's mapping is refused for by the kernel's
    /// default overcommit heuristic, and which gitvisor-vmm refuses too.
    pub fn memory_problem(&self, bytes: u64, overcommit: bool) -> Option<String> {
        let backing = self.memory?;
        (bytes > backing && !overcommit).then(|| {
            format!(
                "memory: {} is more than this host can back ({} of RAM and swap together); lower memory, or annotate the VM {OVERCOMMIT_ANNOTATION}: \"true\" if the host overcommits on purpose",
                ByteSize(bytes),
                ByteSize(backing >> 20 << 20)
            )
        })
    }
}

/// An OVMF build: the code (read-only) and the template of its variable store, which
/// each VM gets a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiFirmware {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// Where OVMF is looked for: Debian/Ubuntu (4M and 2M builds), Fedora, Arch, NixOS-style
/// `qemu/` data dirs. The first pair whose files both exist is used.
pub const UEFI_CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchBoot {
    Kernel {
        kernel: String,
        initrd: Option<String>,
        cmdline: Option<String>,
    },
    Bios,
    /// OVMF's code; the variable store is the VM's own copy (`RunPaths::nvram`, in its
    /// data dir), made from `vars` at the first start.
    Uefi {
        code: PathBuf,
        vars: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDisk {
    pub path: String,
    pub format: DiskFormat,
    pub read_only: bool,
    /// The virtio serial the guest sees (`/dev/disk/by-id/virtio-<serial>`).
    pub serial: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchNic {
    pub tap: String,
    pub mac: MacAddress,
}

/// One VM, ready to be started by a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub name: String,
    pub paths: RunPaths,
    pub accel: ResolvedAccel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub boot: LaunchBoot,
    /// Where the builtin VMM keeps this kernel decompressed (`kernel_cache.rs`), for a
    /// kernel boot.
    pub kernel_cache: Option<PathBuf>,
    pub disks: Vec<LaunchDisk>,
    pub nics: Vec<LaunchNic>,
    /// A cloud-init seed is attached (at `paths.seed()`).
    pub seed: bool,
    pub cdrom: Option<String>,
    pub serial_log: PathBuf,
    /// The serial console is also served on `paths.serial_socket()`.
    pub serial_socket: bool,
    pub vnc: bool,
    /// Start with the vCPUs stopped (`state: Paused`).
    pub paused: bool,
    /// More memory than the host's RAM and swap is allowed
    /// (`gitvisor.dev/overcommit: "true"`).
    pub overcommit: bool,
}

/// The serial of disk `index`.
pub fn disk_serial(index: usize) -> String {
    format!("disk{index}")
}

impl Launch {
    /// Resolves `spec` for VM `name` with its directories below `roots`, or says what
    /// stands in the way (one sentence each; someone has to act).
    pub fn resolve(
        name: &str,
        spec: &VirtualMachineSpec,
        context: &PlanContext,
        host: &HostFacts,
        roots: &VmRoots,
    ) -> Result<Launch, Vec<String>> {
        let mut problems = Vec::new();
        let paths = RunPaths::new(roots, name);
        problems.extend(paths.problem());
        let accel = match spec.accel {
            Accel::Kvm if !host.kvm => {
                problems.push(
                    "accel: kvm, but /dev/kvm cannot be opened on this host; enable KVM or declare accel: tcg".to_owned(),
                );
                ResolvedAccel::Kvm
            }
            Accel::Kvm => ResolvedAccel::Kvm,
            Accel::Tcg => ResolvedAccel::Tcg,
            Accel::Auto if host.kvm => ResolvedAccel::Kvm,
            Accel::Auto => ResolvedAccel::Tcg,
        };
        let boot = match (&spec.boot.kernel, spec.boot.firmware) {
            (Some(kernel), _) => LaunchBoot::Kernel {
                kernel: kernel.clone(),
                initrd: spec.boot.initrd.clone(),
                cmdline: spec.boot.cmdline.clone(),
            },
            (None, Some(Firmware::Uefi)) => match &host.uefi {
                Some(firmware) => LaunchBoot::Uefi {
                    code: firmware.code.clone(),
                    vars: firmware.vars.clone(),
                },
                None => {
                    problems.push(format!(
                        "firmware: uefi, but no OVMF firmware was found on this host (looked for {}); install it (Debian: apt install ovmf)",
                        UEFI_CANDIDATES[0].0
                    ));
                    LaunchBoot::Bios
                }
            },
            (None, _) => LaunchBoot::Bios,
        };
        let mut disks = Vec::with_capacity(spec.disks.len());
        for (index, disk) in spec.disks.iter().enumerate() {
            // A Volume's disk opens in the volume's format (an LV, a raw file: raw).
            let mut file_format = None;
            let path = match (&disk.path, &disk.volume) {
                (Some(path), _) => path.clone(),
                (None, Some(volume)) => match context.referenced(Kind::Volume, volume) {
                    Some(resource) => match resource.spec.get::<VolumeSpec>() {
                        // A volume on a share (`spec.nfs`): its file in the mount path.
                        Some(declared) => match on_share(declared, context, &roots.state) {
                            Ok(declared) => {
                                file_format = Some(declared.disk_format());
                                declared
                                    .path(volume.as_str())
                                    .to_string_lossy()
                                    .into_owned()
                            }
                            Err(reason) => {
                                problems.push(format!("disk {index}: Volume/{volume}: {reason}"));
                                continue;
                            }
                        },
                        _ => {
                            problems.push(format!("disk {index}: Volume/{volume} is not a volume"));
                            continue;
                        }
                    },
                    None => {
                        problems.push(format!(
                            "disk {index}: Volume/{volume} is not declared for this host"
                        ));
                        continue;
                    }
                },
                (None, None) => {
                    problems.push(format!("disk {index}: neither `path` nor `volume`"));
                    continue;
                }
            };
            let format = match file_format {
                Some(crate::drivers::volume::FileFormat::Qcow2) => DiskFormat::Qcow2,
                Some(crate::drivers::volume::FileFormat::Raw) => DiskFormat::Raw,
                None => disk.effective_format(),
            };
            if format == DiskFormat::Qcow2
                && disk.volume.is_some()
                && spec.hypervisor == crate::drivers::vm::spec::Hypervisor::Builtin
            {
                problems.push(format!(
                    "disk {index}: Volume/{} is a qcow2 file, and hypervisor: builtin opens raw disks only; declare the volume with format: raw, or use hypervisor: qemu",
                    disk.volume.as_ref().map(ToString::to_string).unwrap_or_default()
                ));
            }
            disks.push(LaunchDisk {
                path,
                format,
                read_only: disk.read_only,
                serial: disk_serial(index),
            });
        }
        let nics = spec
            .networks
            .iter()
            .enumerate()
            .map(|(index, nic)| LaunchNic {
                tap: tap_name(name, index),
                mac: mac_address(name, index, nic.mac),
            })
            .collect();
        let console = spec.console.as_ref();
        let serial_log = console
            .and_then(|c| c.log.as_ref())
            .map(PathBuf::from)
            .unwrap_or_else(|| paths.serial_log());
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Launch {
            name: name.to_owned(),
            accel,
            cpus: spec.cpus,
            memory_mib: spec.memory.bytes().div_ceil(1 << 20),
            kernel_cache: spec
                .boot
                .kernel
                .as_deref()
                .map(|kernel| roots.kernel_cache(kernel)),
            boot,
            disks,
            nics,
            seed: spec.cloud_init.is_some(),
            cdrom: spec.cdrom.clone(),
            serial_log,
            serial_socket: console.is_none_or(|c| c.socket),
            vnc: spec.graphics == Graphics::Vnc,
            paused: spec.state == VmState::Paused,
            overcommit: false,
            paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Spec;
    use crate::model::{Metadata, Name, Resource};

    fn spec(yaml: &str) -> VirtualMachineSpec {
        serde_yaml::from_str(yaml).expect("test spec parses")
    }

    fn volume(name: &str, vg: &str) -> Arc<Resource> {
        let spec: crate::drivers::volume::VolumeSpec =
            serde_yaml::from_str(&format!("volumeGroup: {vg}\nsize: 1GiB")).unwrap();
        Arc::new(Resource::new(
            Metadata::named(Name::parse(name).unwrap()),
            Spec::new(spec),
        ))
    }

    #[test]
    fn a_volume_disk_is_its_device_and_auto_picks_kvm_only_when_it_works() {
        let vm = spec(
            "memory: 300MiB\nboot: {kernel: /k}\ndisks: [{volume: root}, {path: /a.qcow2, readOnly: true}]\nnetworks: [{bridge: br0}]",
        );
        let context = PlanContext::default().with_revision(&[volume("root", "vg0")]);
        let roots = VmRoots::new(
            std::path::Path::new("/run/gitvisor"),
            std::path::Path::new("/var/lib/gitvisor"),
        );
        let root = &roots;
        let tcg = Launch::resolve("vm1", &vm, &context, &HostFacts::default(), root).unwrap();
        assert_eq!(tcg.accel, ResolvedAccel::Tcg);
        assert_eq!(tcg.memory_mib, 300);
        assert_eq!(tcg.disks[0].path, "/dev/vg0/root");
        assert_eq!(tcg.disks[1].format, DiskFormat::Qcow2);
        assert_eq!(tcg.disks[1].serial, "disk1");
        assert_eq!(tcg.nics[0].tap, tap_name("vm1", 0));
        assert!(tcg.serial_socket);
        let kvm = HostFacts {
            kvm: true,
            ..HostFacts::default()
        };
        let fast = Launch::resolve("vm1", &vm, &context, &kvm, root).unwrap();
        assert_eq!(fast.accel, ResolvedAccel::Kvm);
    }

    fn file_volume(name: &str, format: &str) -> Arc<Resource> {
        let spec: crate::drivers::volume::VolumeSpec = serde_yaml::from_str(&format!(
            "directory: /var/lib/gitvisor/volumes\nformat: {format}\nsize: 1GiB"
        ))
        .unwrap();
        Arc::new(Resource::new(
            Metadata::named(Name::parse(name).unwrap()),
            Spec::new(spec),
        ))
    }

    #[test]
    fn an_nfs_volume_disk_is_its_file_on_the_share() {
        let roots = VmRoots::new(
            std::path::Path::new("/run/gitvisor"),
            std::path::Path::new("/srv/state"),
        );
        let mount: crate::drivers::nfs_mount::NfsMountSpec =
            serde_yaml::from_str("{server: nas, export: /srv/vms}").unwrap();
        let share = Arc::new(Resource::new(
            crate::model::Metadata::named(crate::model::Name::parse("nas").unwrap()),
            crate::model::Spec::new(mount),
        ));
        let on_share: crate::drivers::volume::VolumeSpec =
            serde_yaml::from_str("{nfs: nas, size: 1GiB}").unwrap();
        let root = Arc::new(Resource::new(
            crate::model::Metadata::named(crate::model::Name::parse("root").unwrap()),
            crate::model::Spec::new(on_share),
        ));
        let vm = spec("memory: 256MiB\nboot: {kernel: /k}\ndisks: [{volume: root}]");
        let context = PlanContext::default().with_revision(&[share, Arc::clone(&root)]);
        let launch = Launch::resolve("vm1", &vm, &context, &HostFacts::default(), &roots).unwrap();
        assert_eq!(launch.disks[0].path, "/srv/state/nfs/nas/root.qcow2");
        assert_eq!(launch.disks[0].format, DiskFormat::Qcow2);
        let without_mount = PlanContext::default().with_revision(&[root]);
        let problems =
            Launch::resolve("vm1", &vm, &without_mount, &HostFacts::default(), &roots).unwrap_err();
        assert!(problems[0].contains("NfsMount/nas"), "{problems:?}");
    }

    #[test]
    fn a_file_volume_disk_is_its_file_in_its_format_and_builtin_refuses_qcow2() {
        let roots = VmRoots::new(
            std::path::Path::new("/run/gitvisor"),
            std::path::Path::new("/var/lib/gitvisor"),
        );
        let context = PlanContext::default()
            .with_revision(&[file_volume("root", "qcow2"), file_volume("data", "raw")]);
        let vm =
            spec("memory: 256MiB\nboot: {kernel: /k}\ndisks: [{volume: root}, {volume: data}]");
        let launch = Launch::resolve("vm1", &vm, &context, &HostFacts::default(), &roots).unwrap();
        assert_eq!(launch.disks[0].path, "/var/lib/gitvisor/volumes/root.qcow2");
        assert_eq!(launch.disks[0].format, DiskFormat::Qcow2);
        assert_eq!(launch.disks[1].path, "/var/lib/gitvisor/volumes/data.raw");
        assert_eq!(launch.disks[1].format, DiskFormat::Raw);
        let builtin = spec(
            "hypervisor: builtin\nmemory: 256MiB\nboot: {kernel: /k}\ndisks: [{volume: root}, {volume: data}]",
        );
        let kvm = HostFacts {
            kvm: true,
            ..HostFacts::default()
        };
        let problems = Launch::resolve("vm1", &builtin, &context, &kvm, &roots).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("Volume/root is a qcow2 file"),
            "{problems:?}"
        );
    }

    #[test]
    fn what_the_host_lacks_is_reported_not_guessed() {
        let vm = spec("memory: 256MiB\nboot: {firmware: uefi}\naccel: kvm");
        let problems = Launch::resolve(
            "vm1",
            &vm,
            &PlanContext::default(),
            &HostFacts::default(),
            &VmRoots::new(
                std::path::Path::new("/run/gitvisor"),
                std::path::Path::new("/var/lib/gitvisor"),
            ),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("/dev/kvm"));
        assert!(problems[1].contains("apt install ovmf"));
    }
}
