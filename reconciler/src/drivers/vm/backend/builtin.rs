//! The builtin backend: the `gitvisor-vmm` command line for a [`Launch`] (`hypervisor:
//! builtin`, gitvisor's own microVM monitor, `docs/vmm.md`).
//!
//! Choices, and why:
//! - **Direct kernel boot only** (`boot.kernel`): the VMM has no firmware. What it cannot
//!   do (`firmware`, `accel: tcg`, `state: Paused`, `graphics`, `cdrom`, qcow2 disks,
//!   more devices than its interrupt lines) is rejected by the validator
//!   (`VirtualMachineSpec::builtin_problems`) and again here as `unsupported`.
//! - **The kernel command line** starts with what a Linux guest of this VMM needs
//!   ([`BASE_CMDLINE`]: the serial console, reset through the i8042 so a reboot ends the
//!   process, after the VMM's own defaults: no PCI probing, the i8042 without the probes
//!   the VMM does not answer); the declared `cmdline` follows, so its settings win. The devices are announced in the
//!   ACPI tables, not on the command line; the whole line must fit gitvisor-vmm's
//!   2 KiB, which validation checks.
//! - **The kernel cache**: `--kernel-cache <state dir>/vmm-kernels/<hash of the kernel's
//!   path>`, so the VMM decompresses a bzImage once and boots the ELF after that (2-3x
//!   faster to `/init` in a nested guest); the driver collects directories no declared VM
//!   uses (`kernel_cache.rs`).
//! - **Disks** are `--disk path=…,id=disk<i>` in spec order (`/dev/vda`, …), the
//!   cloud-init seed last with the serial `cidata`; the VMM's option syntax has no
//!   escaping, so a path with a comma cannot be passed and is a plan-time problem.
//! - **NICs** are `--net tap=…,mac=…` on the tap gitvisor created, marked and enslaved.
//! - **Files**: control socket `api.sock`, serial socket and log like QEMU's, `vmm.log`
//!   for the VMM's own messages, the run dir's `pid` (locked by the VMM while it runs),
//!   `--daemonize` (exit 0 once the guest is set up, or 1 with the error on stderr).
//! - **The binary** is `gitvisor-vmm` next to the running `gitvisor` executable (how the
//!   workspace builds and packages install them), else the first on `PATH`; found once
//!   when the driver starts. Not finding it is a problem every builtin VM's plan shows.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::Backend;
use crate::drivers::vm::launch::{Launch, LaunchBoot, ResolvedAccel};
use crate::drivers::vm::seed::SEED_SERIAL;
use crate::drivers::vm::{Hypervisor, VirtualMachineSpec};

/// The VMM's binary name.
pub const VMM_PROGRAM: &str = "gitvisor-vmm";

/// What every Linux guest of the builtin VMM gets at the start of its command line.
pub use crate::drivers::vm::BUILTIN_BASE_CMDLINE as BASE_CMDLINE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinBackend {
    /// The VMM binary, or why it was not found.
    program: Result<PathBuf, String>,
}

impl BuiltinBackend {
    /// The backend with the VMM found next to this executable or on `PATH`.
    pub fn locate() -> Self {
        let exe = std::env::current_exe().ok();
        let path = std::env::var_os("PATH");
        BuiltinBackend {
            program: locate_vmm(exe.as_deref(), path.as_deref()),
        }
    }

    /// The backend with the VMM at `program`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        BuiltinBackend {
            program: Ok(program.into()),
        }
    }

    /// The backend of a build whose VMM cannot be found: `why`.
    pub fn missing(why: impl Into<String>) -> Self {
        BuiltinBackend {
            program: Err(why.into()),
        }
    }

    /// The VMM binary, or why there is none.
    pub fn program(&self) -> Result<&Path, &str> {
        match &self.program {
            Ok(path) => Ok(path),
            Err(why) => Err(why),
        }
    }
}

/// `gitvisor-vmm` next to `exe` (the running gitvisor), else in a directory of `path`
/// (`$PATH`), or why not.
pub fn locate_vmm(exe: Option<&Path>, path: Option<&OsStr>) -> Result<PathBuf, String> {
    let beside = exe.and_then(Path::parent).map(|dir| dir.join(VMM_PROGRAM));
    if let Some(candidate) = &beside
        && candidate.is_file()
    {
        return Ok(candidate.clone());
    }
    if let Some(found) = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(VMM_PROGRAM))
        .find(|candidate| candidate.is_file())
    {
        return Ok(found);
    }
    let beside = beside
        .map(|p| format!("{} nor ", p.display()))
        .unwrap_or_default();
    Err(format!(
        "{VMM_PROGRAM} (the builtin hypervisor) was found neither at {beside}on PATH; install it next to gitvisor (cargo build --workspace builds both into the same directory)"
    ))
}

/// An option value of the VMM: `key=value` pairs split at commas, without escaping.
fn has_comma(value: &str) -> bool {
    value.contains(',')
}

impl Backend for BuiltinBackend {
    fn hypervisor(&self) -> Hypervisor {
        Hypervisor::Builtin
    }

    fn command_line(&self, launch: &Launch) -> Vec<String> {
        let paths = &launch.paths;
        let program = match &self.program {
            Ok(path) => path.to_string_lossy().into_owned(),
            Err(_) => VMM_PROGRAM.to_owned(),
        };
        let mut argv = vec![program];
        let mut arg = |option: &str, value: String| {
            argv.push(option.to_owned());
            argv.push(value);
        };
        if let LaunchBoot::Kernel {
            kernel,
            initrd,
            cmdline,
        } = &launch.boot
        {
            arg("--kernel", kernel.clone());
            if let Some(cache) = &launch.kernel_cache {
                arg("--kernel-cache", cache.to_string_lossy().into_owned());
            }
            if let Some(initrd) = initrd {
                arg("--initrd", initrd.clone());
            }
            let line = match cmdline {
                Some(declared) if !declared.is_empty() => format!("{BASE_CMDLINE} {declared}"),
                _ => BASE_CMDLINE.to_owned(),
            };
            arg("--cmdline", line);
        }
        arg("--cpus", launch.cpus.to_string());
        arg("--memory", launch.memory_mib.to_string());
        for disk in &launch.disks {
            let read_only = if disk.read_only { ",readonly=on" } else { "" };
            arg(
                "--disk",
                format!("path={}{read_only},id={}", disk.path, disk.serial),
            );
        }
        if launch.seed {
            arg(
                "--disk",
                format!(
                    "path={},readonly=on,id={SEED_SERIAL}",
                    paths.seed().display()
                ),
            );
        }
        for nic in &launch.nics {
            arg("--net", format!("tap={},mac={}", nic.tap, nic.mac));
        }
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        arg("--api-socket", path(paths.monitor(Hypervisor::Builtin)));
        if launch.serial_socket {
            arg("--serial-socket", path(paths.serial_socket()));
        }
        arg("--serial-log", path(launch.serial_log.clone()));
        arg("--pid-file", path(paths.pid()));
        arg("--log-file", path(paths.vmm_log()));
        if launch.overcommit {
            argv.push("--overcommit".to_owned());
        }
        argv.push("--daemonize".to_owned());
        argv
    }

    fn unsupported(&self, spec: &VirtualMachineSpec) -> Vec<String> {
        spec.builtin_problems()
            .into_iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect()
    }

    fn problems(&self, launch: &Launch) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = &self.program {
            problems.push(why.clone());
        }
        if launch.accel != ResolvedAccel::Kvm {
            problems.push(
                "hypervisor: builtin runs guests on KVM, and /dev/kvm cannot be opened on this host; enable KVM (VT-x/AMD-V, kvm_intel or kvm_amd, run as root) or use hypervisor: qemu with accel: tcg".to_owned(),
            );
        }
        let seed = launch.seed.then(|| launch.paths.seed());
        let disk_paths = launch
            .disks
            .iter()
            .map(|disk| disk.path.clone())
            .chain(seed.map(|p| p.to_string_lossy().into_owned()));
        for disk in disk_paths.filter(|p| has_comma(p)) {
            problems.push(format!(
                "gitvisor-vmm cannot open a disk whose path has a comma ({disk}); rename the file or the run dir"
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::PlanContext;
    use crate::drivers::vm::launch::HostFacts;

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

    fn kvm() -> HostFacts {
        HostFacts {
            kvm: true,
            ..HostFacts::default()
        }
    }

    #[test]
    fn a_direct_boot_vm_with_disks_a_nic_and_a_seed() {
        let backend = BuiltinBackend::with_program("/usr/lib/gitvisor/gitvisor-vmm");
        let argv = backend.command_line(&launch(
            "hypervisor: builtin\ncpus: 2\nmemory: 96MiB\n\
             boot: {kernel: /boot/vmlinux, initrd: /boot/initrd, cmdline: quiet root=/dev/vda}\n\
             disks: [{path: /images/root.img}, {path: /images/data.img, readOnly: true}]\n\
             networks: [{bridge: br0, mac: \"52:54:00:00:00:01\"}]\n\
             cloudInit: {userData: x}",
            &kvm(),
        ));
        let tap = crate::drivers::vm::nic::tap_name("vm1", 0);
        let cache = crate::drivers::vm::kernel_cache::cache_dir_name("/boot/vmlinux");
        let expected = [
            "/usr/lib/gitvisor/gitvisor-vmm",
            "--kernel",
            "/boot/vmlinux",
            "--kernel-cache",
            &format!("/var/lib/gitvisor/vmm-kernels/{cache}"),
            "--initrd",
            "/boot/initrd",
            "--cmdline",
            &format!("{BASE_CMDLINE} quiet root=/dev/vda"),
            "--cpus",
            "2",
            "--memory",
            "96",
            "--disk",
            "path=/images/root.img,id=disk0",
            "--disk",
            "path=/images/data.img,readonly=on,id=disk1",
            "--disk",
            "path=/run/gitvisor/vm/vm1/seed.img,readonly=on,id=cidata",
            "--net",
            &format!("tap={tap},mac=52:54:00:00:00:01"),
            "--api-socket",
            "/run/gitvisor/vm/vm1/api.sock",
            "--serial-socket",
            "/run/gitvisor/vm/vm1/serial.sock",
            "--serial-log",
            "/run/gitvisor/vm/vm1/serial.log",
            "--pid-file",
            "/run/gitvisor/vm/vm1/pid",
            "--log-file",
            "/run/gitvisor/vm/vm1/vmm.log",
            "--daemonize",
        ];
        assert_eq!(argv, expected);
        assert!(
            backend
                .problems(&launch(
                    "hypervisor: builtin\nmemory: 64MiB\nboot: {kernel: /k}",
                    &kvm()
                ))
                .is_empty()
        );
    }

    #[test]
    fn the_vmm_parses_the_command_line_it_is_given() {
        let backend = BuiltinBackend::with_program("/x/gitvisor-vmm");
        let argv = backend.command_line(&launch(
            "hypervisor: builtin\ncpus: 3\nmemory: 1GiB\nboot: {kernel: /k}\n\
             disks: [{path: /a.img, readOnly: true}]\nnetworks: [{bridge: br0}]\n\
             console: {socket: false, log: /var/log/vm1.log}\ncloudInit: {metaData: x}",
            &kvm(),
        ));
        use clap::Parser;
        let config =
            gitvisor_vmm::config::Config::try_parse_from(&argv).expect("the VMM parses it");
        assert_eq!(config.cpus, 3);
        assert_eq!(config.memory_mib, 1024);
        assert_eq!(config.cmdline, BASE_CMDLINE);
        assert_eq!(config.disks.len(), 2);
        assert!(config.disks.iter().all(|d| d.read_only));
        assert_eq!(config.disks[1].id.as_deref(), Some(SEED_SERIAL));
        assert_eq!(
            config.nets[0].tap,
            crate::drivers::vm::nic::tap_name("vm1", 0)
        );
        assert_eq!(config.serial_socket, None);
        assert_eq!(config.serial_log, Some(PathBuf::from("/var/log/vm1.log")));
        assert_eq!(
            config.api_socket,
            Some(PathBuf::from("/run/gitvisor/vm/vm1/api.sock"))
        );
        assert!(config.daemonize);
        assert_eq!(
            config.kernel_cache,
            Some(
                Path::new("/var/lib/gitvisor/vmm-kernels")
                    .join(crate::drivers::vm::kernel_cache::cache_dir_name("/k"))
            )
        );
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn what_the_host_lacks_is_a_problem_naming_the_fix() {
        let missing = BuiltinBackend::missing("gitvisor-vmm was found neither at … nor on PATH");
        let problems = missing.problems(&launch(
            "hypervisor: builtin\nmemory: 64MiB\nboot: {kernel: /k}\ndisks: [{path: \"/a,b.img\"}]",
            &HostFacts::default(),
        ));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("neither"));
        assert!(problems[1].contains("/dev/kvm"));
        assert!(problems[2].contains("comma"));
        assert_eq!(
            missing.command_line(&launch("memory: 64MiB\nboot: {kernel: /k}", &kvm()))[0],
            VMM_PROGRAM
        );
    }

    #[test]
    fn the_validators_limits_are_the_vmms() {
        use crate::drivers::vm::{BUILTIN_MAX_CPUS, BUILTIN_MAX_DEVICES};
        assert_eq!(BUILTIN_MAX_CPUS, u32::from(gitvisor_vmm::layout::MAX_VCPUS));
        assert_eq!(
            BUILTIN_MAX_DEVICES,
            gitvisor_vmm::layout::MAX_VIRTIO_DEVICES
        );
        assert_eq!(
            crate::drivers::vm::spec::BUILTIN_VMM_BOOT_ARGS,
            gitvisor_vmm::config::DEFAULT_BOOT_ARGS
        );
    }

    #[test]
    fn the_vmm_is_found_next_to_gitvisor_then_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let exe = bin.join("gitvisor");
        let path = std::env::join_paths([other.clone(), PathBuf::from("relative")]).unwrap();
        let error = locate_vmm(Some(&exe), Some(&path)).unwrap_err();
        assert!(
            error.contains(&bin.join(VMM_PROGRAM).display().to_string()),
            "{error}"
        );
        assert!(error.contains("cargo build --workspace"), "{error}");
        std::fs::write(other.join(VMM_PROGRAM), b"").unwrap();
        assert_eq!(
            locate_vmm(Some(&exe), Some(&path)),
            Ok(other.join(VMM_PROGRAM))
        );
        std::fs::write(bin.join(VMM_PROGRAM), b"").unwrap();
        assert_eq!(
            locate_vmm(Some(&exe), Some(&path)),
            Ok(bin.join(VMM_PROGRAM))
        );
    }
}
