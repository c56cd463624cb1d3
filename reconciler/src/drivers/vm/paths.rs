//! Where one VM's files live: its runtime files in `<run dir>/vm/<name>/`, what must
//! outlive a host reboot (the UEFI variable store) in `<state dir>/vm/<name>/`.
//!
//! The directory is the VM's ownership marker on the host: it holds the record of what
//! gitvisor launched (`gitvisor.json`, see `record.rs`) and everything the running guest
//! needs that is not a disk: the hypervisor's pid file and control socket (QEMU's QMP
//! `qmp.sock`, the builtin VMM's `api.sock` and its `vmm.log`), the serial socket and log,
//! the cloud-init seed, the VNC socket. It lives as long as the VM is declared, running
//! or not, and goes when the VM is pruned.
//!
//! The run dir is usually on a tmpfs (`/run`), emptied at every boot: fine for sockets
//! and a pid file, but the UEFI variable store is the guest's own data (boot entries,
//! Secure Boot keys), so it lives in the VM's data dir under the state dir, made at the
//! first UEFI start (moved there from the run dir, where older gitvisors kept it) and
//! removed only when the VM is pruned.
//!
//! A run dir is created under a temporary name (`_new.<name>`, which no VM name can be:
//! names never contain `_`) with its record already in it, then renamed: a directory
//! named after a VM always carries its record.

use std::path::{Path, PathBuf};

use crate::drivers::vm::Hypervisor;
use crate::model::Name;

/// The subdirectory of gitvisor's run dir that holds one directory per VM.
pub const VM_SUBDIR: &str = "vm";
/// The subdirectory of gitvisor's state dir that holds one data dir per VM.
pub const DATA_SUBDIR: &str = "vm";
/// The record file, gitvisor's marker.
pub const RECORD_FILE: &str = "gitvisor.json";
/// A run dir is made under this prefix plus the VM's name, then renamed.
pub const TEMPORARY_PREFIX: &str = "_new.";
/// The cloud-init seed image.
pub const SEED_FILE: &str = "seed.img";
/// The per-VM copy of the UEFI variable store (NVRAM), in the VM's data dir.
pub const NVRAM_FILE: &str = "OVMF_VARS.fd";
/// Where the serial console is logged unless `console.log` says otherwise.
pub const SERIAL_LOG_FILE: &str = "serial.log";
/// The serial console's socket, for `gitvisor console`.
pub const SERIAL_SOCKET_FILE: &str = "serial.sock";
/// QEMU's control socket (QMP).
pub const QMP_SOCKET_FILE: &str = "qmp.sock";
/// gitvisor-vmm's control socket (JSON lines, `docs/vmm.md`).
pub const API_SOCKET_FILE: &str = "api.sock";
/// gitvisor-vmm's own messages (start line, exit reason, errors).
pub const VMM_LOG_FILE: &str = "vmm.log";

/// The longest path a unix socket can have (`sun_path` is 108 bytes with its NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// Where the VMs' directories are: run dirs below `<run dir>/vm`, data dirs below
/// `<state dir>/vm`, the builtin VMM's kernel cache below `<state dir>/vmm-kernels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRoots {
    pub run: PathBuf,
    pub data: PathBuf,
    /// The kernel cache, one directory per kernel path (`kernel_cache.rs`).
    pub kernels: PathBuf,
    /// gitvisor's state dir itself: where an NfsMount without `spec.path` is mounted, so
    /// where a disk on a `spec.nfs` Volume is.
    pub state: PathBuf,
}

impl VmRoots {
    /// The roots below gitvisor's `--run-dir` and `--state-dir`.
    pub fn new(run_dir: &Path, state_dir: &Path) -> Self {
        VmRoots {
            run: run_dir.join(VM_SUBDIR),
            data: state_dir.join(DATA_SUBDIR),
            kernels: state_dir.join(super::kernel_cache::KERNEL_CACHE_SUBDIR),
            state: state_dir.to_path_buf(),
        }
    }

    /// The kernel cache directory of the kernel at `kernel` (as declared).
    pub fn kernel_cache(&self, kernel: &str) -> PathBuf {
        self.kernels
            .join(super::kernel_cache::cache_dir_name(kernel))
    }

    /// The files of VM `vm`.
    pub fn paths(&self, vm: &str) -> RunPaths {
        RunPaths {
            dir: self.run.join(vm),
            data: self.data.join(vm),
        }
    }
}

/// The files of one VM: its run dir, and its data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    dir: PathBuf,
    data: PathBuf,
}

impl RunPaths {
    /// The run dir of `vm` below `roots.run`, its data dir below `roots.data`.
    pub fn new(roots: &VmRoots, vm: &str) -> Self {
        roots.paths(vm)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VM's data dir: what must outlive a host reboot.
    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn record(&self) -> PathBuf {
        self.dir.join(RECORD_FILE)
    }

    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// The control socket of `hypervisor`: QMP for QEMU, the API socket for the builtin
    /// VMM.
    pub fn monitor(&self, hypervisor: Hypervisor) -> PathBuf {
        self.dir.join(match hypervisor {
            Hypervisor::Qemu => QMP_SOCKET_FILE,
            Hypervisor::Builtin => API_SOCKET_FILE,
        })
    }

    /// The builtin VMM's log of its own messages.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join(VMM_LOG_FILE)
    }

    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join(SERIAL_SOCKET_FILE)
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join(SERIAL_LOG_FILE)
    }

    pub fn vnc(&self) -> PathBuf {
        self.dir.join("vnc.sock")
    }

    pub fn seed(&self) -> PathBuf {
        self.dir.join(SEED_FILE)
    }

    /// The VM's UEFI variable store, in its data dir.
    pub fn nvram(&self) -> PathBuf {
        self.data.join(NVRAM_FILE)
    }

    /// Where earlier gitvisor versions kept the variable store: the run dir, lost at reboot.
    /// Moved to [`RunPaths::nvram`] at the VM's next start.
    pub fn run_dir_nvram(&self) -> PathBuf {
        self.dir.join(NVRAM_FILE)
    }

    /// Why these paths cannot work, if they cannot: a socket path longer than a unix
    /// socket address holds (a long `--run-dir` and a long VM name together).
    pub fn problem(&self) -> Option<String> {
        [
            self.monitor(Hypervisor::Qemu),
            self.monitor(Hypervisor::Builtin),
            self.serial_socket(),
            self.vnc(),
        ]
            .into_iter()
            .find(|path| path.as_os_str().len() > SOCKET_PATH_MAX)
            .map(|path| {
                format!(
                    "the socket path {} is longer than the {SOCKET_PATH_MAX} bytes a unix socket address holds; use a shorter --run-dir or VM name",
                    path.display()
                )
            })
    }
}

/// The name of the directory `vm`'s run dir is made under before it is renamed.
pub fn temporary_dir_name(vm: &str) -> String {
    format!("{TEMPORARY_PREFIX}{vm}")
}

/// The VM a temporary run dir was made for, if `dir` is one.
pub fn temporary_dir_owner(dir: &str) -> Option<&str> {
    dir.strip_prefix(TEMPORARY_PREFIX)
        .filter(|vm| Name::parse(vm).is_ok())
}

/// `gitvisor console NAME`: VM `name`'s serial console (QEMU's chardev server in its run
/// dir), or why this host has no VM `name` (its run dir does not exist).
pub(crate) fn console(
    settings: &crate::drivers::HostSettings,
    name: &crate::model::Name,
) -> Result<crate::drivers::Console, String> {
    let paths = VmRoots::new(&settings.run_dir, &settings.state_dir).paths(name.as_str());
    if !paths.dir().is_dir() {
        return Err(format!(
            "no VM {name} on this host: {} does not exist (is it declared and applied, with this --run-dir?)",
            paths.dir().display()
        ));
    }
    Ok(crate::drivers::Console {
        socket: paths.serial_socket(),
        owner: format!("VM {name}"),
        unreachable_hint: "is it running, with console.socket true? another `gitvisor console` may hold it",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_dir_names_its_vm_and_no_vm_can_have_its_name() {
        let dir = temporary_dir_name("vm1");
        assert_eq!(temporary_dir_owner(&dir), Some("vm1"));
        assert!(Name::parse(&dir).is_err());
        assert_eq!(temporary_dir_owner("vm1"), None);
        assert_eq!(temporary_dir_owner("_new.Bad_"), None);
    }

    #[test]
    fn socket_paths_must_fit_a_unix_address() {
        let roots = VmRoots::new(Path::new("/run/gitvisor"), Path::new("/var/lib/gitvisor"));
        let short = RunPaths::new(&roots, "vm1");
        assert_eq!(short.problem(), None);
        assert_eq!(
            short.monitor(Hypervisor::Qemu),
            Path::new("/run/gitvisor/vm/vm1/qmp.sock")
        );
        assert_eq!(
            short.monitor(Hypervisor::Builtin),
            Path::new("/run/gitvisor/vm/vm1/api.sock")
        );
        assert_eq!(
            short.nvram(),
            Path::new("/var/lib/gitvisor/vm/vm1/OVMF_VARS.fd"),
            "the variable store outlives a reboot"
        );
        let long_roots = VmRoots {
            run: PathBuf::from(format!("/{}", "r".repeat(60))),
            data: PathBuf::from("/var/lib/gitvisor/vm"),
            kernels: PathBuf::from("/var/lib/gitvisor/vmm-kernels"),
            state: PathBuf::from("/var/lib/gitvisor"),
        };
        let long = RunPaths::new(&long_roots, &"v".repeat(63));
        assert!(long.problem().unwrap().contains("shorter --run-dir"));
    }
}
