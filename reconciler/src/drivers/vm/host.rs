//! The real [`VmHost`]: the run dirs on the filesystem, the processes in `/proc`, QMP on
//! each VM's socket, taps through `gitvisor-tap` and netlink (the Bridge driver's
//! [`NetlinkLinks`]), QEMU started with `tokio::process`.
//!
//! Host behaviours this file relies on or works around:
//! - QEMU with `-daemonize` exits 0 only once its devices are set up (the detached child
//!   tells the parent), and it points its stdio at `/dev/null` before that, so reading
//!   stderr to its end and waiting for the exit status tells a launch's outcome.
//! - QEMU deletes its pid file when it exits, and locks it while it runs.
//! - A pid can be reused after the VM's process ended, so a process counts as the VM's
//!   only when its command line names the VM's pid file (both backends pass it); a
//!   zombie has an empty command line and so never counts.
//! - gitvisor-vmm with `--daemonize` behaves like QEMU's `-daemonize`: the parent exits
//!   0 once the guest is set up, or 1 with the error on stderr; it locks its pid file and
//!   removes it at exit.
//! - The kernel ignores an alias given when a link is created and offers no netlink
//!   request for a tap (`EOPNOTSUPP`), hence the ioctl and the separate alias request.
//! - Files are written atomically (a sibling temporary file renamed over), so a crash
//!   never leaves half a record.
//! - A process's start time is field 22 of `/proc/PID/stat`, in clock ticks since boot
//!   (`sysconf(_SC_CLK_TCK)`), the boot being `btime` of `/proc/stat` in seconds since
//!   the epoch; field 2 (the command name) is in parentheses and may hold spaces, so the
//!   fields are counted after its last `)`.
//! - The run dir is usually on a tmpfs and the state dir not: moving the NVRAM from one to
//!   the other is a copy (written atomically) then a removal, not a rename.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use nix::errno::Errno;

use super::console::{ConsoleTail, TAIL_BYTES};
use super::launch::{HostFacts, UEFI_CANDIDATES, UefiFirmware};
use super::monitor::{Monitor, MonitorError};
use super::paths::{RECORD_FILE, RunPaths, VmRoots, temporary_dir_name};
use super::preflight::{FileFact, FileFacts, QCOW2_MAGIC};
use super::qmp::Qmp;
use super::record::RunRecord;
use super::seam::{
    Answer, HostError, HostSnapshot, Process, RecordRead, RunDir, VmHost, VmRequest,
};
use super::vmm_api::VmmApi;
use crate::contract::FailureClass;
use crate::drivers::bridge::{LinkSeam, NetlinkLinks};
use crate::drivers::network::{Leases, read_leases};
use crate::drivers::vm::Hypervisor;

/// How long a hypervisor may take to set a VM up and detach.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long reading the DHCP lease files may take.
const LEASES_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a wait for a process to end looks again.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct RealHost {
    roots: VmRoots,
    /// Gitvisor's network dir under the run dir, where dnsmasq keeps its leases.
    network_dir: PathBuf,
    links: NetlinkLinks,
    qmp: Qmp,
    vmm: VmmApi,
}

impl RealHost {
    /// The host, with run dirs and data dirs below `roots`, DHCP leases under
    /// `network_dir`, links in the calling thread's network namespace. Inside a Tokio
    /// runtime.
    pub fn connect(roots: VmRoots, network_dir: PathBuf) -> Result<Self, HostError> {
        let links = NetlinkLinks::connect()?;
        Ok(RealHost {
            roots,
            network_dir,
            links,
            qmp: Qmp,
            vmm: VmmApi,
        })
    }

    fn monitor(&self, hypervisor: Hypervisor) -> &dyn Monitor {
        match hypervisor {
            Hypervisor::Qemu => &self.qmp,
            Hypervisor::Builtin => &self.vmm,
        }
    }

    fn paths(&self, vm: &str) -> Result<RunPaths, HostError> {
        if vm.is_empty() || vm.contains('/') || vm == "." || vm == ".." {
            return Err(HostError::new(
                format!("{vm:?} is not a run dir name"),
                FailureClass::Bug,
            ));
        }
        Ok(self.roots.paths(vm))
    }

    async fn blocking<T: Send + 'static>(
        what: &'static str,
        work: impl FnOnce() -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HostError::new(format!("{what}: {e}"), FailureClass::Bug))?
    }

    /// The DHCP leases of gitvisor's dnsmasq. They only inform `status`, so a file that
    /// cannot be read is a warning, not a failed observe that would stop every VM change.
    async fn leases(&self) -> Leases {
        let read = read_leases(&self.network_dir);
        match tokio::time::timeout(LEASES_TIMEOUT, read).await {
            Ok(Ok(leases)) => leases,
            Ok(Err(error)) => {
                tracing::warn!(
                    "the VMs' addresses are not shown: {}",
                    crate::contract::chain(&error)
                );
                Leases::new()
            }
            Err(_) => {
                tracing::warn!(
                    "the VMs' addresses are not shown: reading the DHCP leases under {} took over {}s",
                    self.network_dir.display(),
                    LEASES_TIMEOUT.as_secs()
                );
                Leases::new()
            }
        }
    }

    async fn launch(&self, argv: Vec<String>) -> Result<Answer, HostError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(HostError::new("an empty command line", FailureClass::Bug));
        };
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HostError::new(
                    format!("{program} is not installed ({})", install_hint(program)),
                    FailureClass::NeedsUser,
                ),
                _ => HostError::io(format!("starting {program}"), &e),
            })?;
        let output = tokio::time::timeout(LAUNCH_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                HostError::new(
                    format!(
                        "{program} did not detach within {}s",
                        LAUNCH_TIMEOUT.as_secs()
                    ),
                    FailureClass::Transient,
                )
            })?
            .map_err(|e| HostError::io(format!("waiting for {program}"), &e))?;
        if output.status.success() {
            return Ok(Answer::Done);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr.trim();
        // Another process holds the pid file: a launch raced this one (QEMU's words, then
        // gitvisor-vmm's).
        let class = if message.contains("Cannot lock pid file")
            || message.contains("is locked by another running gitvisor-vmm")
        {
            FailureClass::Transient
        } else {
            FailureClass::NeedsUser
        };
        Err(HostError::new(
            format!("{program} failed ({}): {message}", output.status),
            class,
        ))
    }
}

#[async_trait]
impl VmHost for RealHost {
    async fn observe(&self) -> Result<HostSnapshot, HostError> {
        let roots = self.roots.clone();
        let (mut run_dirs, data_dirs, kernel_caches) =
            Self::blocking("reading run dirs", move || {
                Ok((
                    read_run_dirs(&roots)?,
                    read_data_dirs(&roots.data)?,
                    read_data_dirs(&roots.kernels)?,
                ))
            })
            .await?;
        let queries = run_dirs.iter().map(|dir| async {
            let (Some(_), RecordRead::Present(record)) = (&dir.process, &dir.record) else {
                return None;
            };
            let hypervisor = record.spec.hypervisor;
            let socket = self.roots.paths(&dir.name).monitor(hypervisor);
            let status = self
                .monitor(hypervisor)
                .status(&socket)
                .await
                .map_err(|e| e.message);
            Some(status)
        });
        let statuses = futures::future::join_all(queries).await;
        for (dir, status) in run_dirs.iter_mut().zip(statuses) {
            dir.status = status;
        }
        let links = self.links.dump().await?;
        let leases = self.leases().await;
        let facts = Self::blocking("probing KVM and firmware", || Ok(host_facts())).await?;
        Ok(HostSnapshot {
            run_dirs,
            data_dirs,
            kernel_caches,
            links,
            leases,
            facts,
        })
    }

    async fn inspect(&self, paths: Vec<PathBuf>) -> Result<FileFacts, HostError> {
        Self::blocking("inspecting the declared files", move || {
            Ok(paths
                .into_iter()
                .map(|path| {
                    let fact = inspect_file(&path);
                    (path, fact)
                })
                .collect())
        })
        .await
    }

    async fn send(&self, request: VmRequest) -> Result<Answer, HostError> {
        match request {
            VmRequest::CreateRunDir { vm, record } => {
                let root = self.roots.run.clone();
                let paths = self.paths(&vm)?;
                let temporary = self.paths(&temporary_dir_name(&vm))?;
                let bytes = record_bytes(&record)?;
                Self::blocking("creating a run dir", move || {
                    create_run_dir(&root, &paths, &temporary, &bytes)
                })
                .await
            }
            VmRequest::WriteRecord { vm, record } => {
                let path = self.paths(&vm)?.record();
                let bytes = record_bytes(&record)?;
                Self::blocking("writing a record", move || write_atomic(&path, &bytes)).await
            }
            VmRequest::RemoveRunDir { dir } => {
                let path = self.paths(&dir)?.dir().to_path_buf();
                Self::blocking("removing a run dir", move || remove_tree(&path)).await
            }
            VmRequest::WriteFile { vm, file, content } => {
                let path = self.paths(&vm)?.dir().join(file.file_name());
                Self::blocking("writing a run file", move || write_atomic(&path, &content)).await
            }
            VmRequest::KeepNvram { vm, template } => {
                let paths = self.paths(&vm)?;
                Self::blocking("keeping the UEFI variable store", move || {
                    keep_nvram(&paths, &template)
                })
                .await
            }
            VmRequest::RemoveDataDir { vm } => {
                let path = self.paths(&vm)?.data().to_path_buf();
                Self::blocking("removing a data dir", move || remove_tree(&path)).await
            }
            VmRequest::RemoveKernelCache { dir } => {
                if !super::kernel_cache::is_cache_dir_name(&dir) {
                    return Err(HostError::new(
                        format!("{dir:?} is not a kernel cache directory name"),
                        FailureClass::Bug,
                    ));
                }
                let path = self.roots.kernels.join(dir);
                Self::blocking("removing a kernel cache directory", move || {
                    remove_tree(&path)
                })
                .await
            }
            VmRequest::CreateTap { name } => {
                // An ioctl and a name lookup: microseconds, and they must run on a thread
                // in this namespace, so not on the blocking pool.
                gitvisor_tap::create_persistent(&name).map_err(|error| {
                    let class = match &error {
                        gitvisor_tap::TapError::Exists { .. } => FailureClass::Transient,
                        _ => match error.errno() {
                            Some(Errno::EBUSY | Errno::EAGAIN | Errno::EINTR) => {
                                FailureClass::Transient
                            }
                            _ => FailureClass::NeedsUser,
                        },
                    };
                    HostError::new(crate::contract::chain(&error), class)
                })?;
                match nix::net::if_::if_nametoindex(name.as_str()) {
                    Ok(index) => Ok(Answer::Index(index)),
                    Err(errno) => Err(HostError::new(
                        format!("created tap {name}, but cannot read its index back: {errno}"),
                        FailureClass::Transient,
                    )),
                }
            }
            VmRequest::FindLink { name } => match nix::net::if_::if_nametoindex(name.as_str()) {
                Ok(index) => Ok(Answer::Index(index)),
                Err(Errno::ENODEV) => Ok(Answer::Absent),
                Err(errno) => Err(HostError::new(
                    format!("looking up {name}: {errno}"),
                    FailureClass::Transient,
                )),
            },
            VmRequest::Link(request) => {
                self.links.send(request).await?;
                Ok(Answer::Done)
            }
            VmRequest::Launch { argv, .. } => self.launch(argv).await,
            VmRequest::Control {
                vm,
                hypervisor,
                command,
            } => {
                let socket = self.paths(&vm)?.monitor(hypervisor);
                self.monitor(hypervisor)
                    .control(&socket, command)
                    .await
                    .map_err(monitor_error)?;
                Ok(Answer::Done)
            }
            VmRequest::WaitExit { vm, pid, within } => {
                let pid_file = self.paths(&vm)?.pid();
                let started = Instant::now();
                loop {
                    if process_of(pid, &pid_file).is_none() {
                        return Ok(Answer::Exited(true));
                    }
                    if started.elapsed() >= within {
                        return Ok(Answer::Exited(false));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            VmRequest::Kill { vm, pid } => {
                let pid_file = self.paths(&vm)?.pid();
                if process_of(pid, &pid_file).is_some() {
                    let pid = i32::try_from(pid).map_err(|_| {
                        HostError::new(format!("pid {pid} out of range"), FailureClass::Bug)
                    })?;
                    match nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    ) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(errno) => {
                            return Err(HostError::new(
                                format!("SIGKILL to {pid}: {errno}"),
                                FailureClass::NeedsUser,
                            ));
                        }
                    }
                }
                Ok(Answer::Done)
            }
        }
    }
}

/// How to install the hypervisor `program`.
fn install_hint(program: &str) -> &'static str {
    if Path::new(program).file_name()
        == Some(std::ffi::OsStr::new(super::backend::builtin::VMM_PROGRAM))
    {
        "install gitvisor-vmm next to gitvisor; cargo build --workspace builds both"
    } else {
        "Debian: apt install qemu-system-x86"
    }
}

fn monitor_error(error: MonitorError) -> HostError {
    let class = if error.transient {
        FailureClass::Transient
    } else {
        FailureClass::NeedsUser
    };
    HostError::new(error.message, class)
}

fn record_bytes(record: &RunRecord) -> Result<Vec<u8>, HostError> {
    record
        .to_bytes()
        .map_err(|e| HostError::new(format!("serialising the record: {e}"), FailureClass::Bug))
}

/// `<root>/_new.<vm>` with the record, renamed to `<root>/<vm>`.
fn create_run_dir(
    root: &Path,
    paths: &RunPaths,
    temporary: &RunPaths,
    record: &[u8],
) -> Result<Answer, HostError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| HostError::io(format!("creating {}", root.display()), &e))?;
    if paths.dir().exists() {
        return Err(HostError::new(
            format!("{} exists already", paths.dir().display()),
            FailureClass::Transient,
        ));
    }
    DirBuilder::new()
        .mode(0o700)
        .create(temporary.dir())
        .map_err(|e| HostError::io(format!("creating {}", temporary.dir().display()), &e))?;
    write_atomic(&temporary.record(), record)?;
    std::fs::rename(temporary.dir(), paths.dir()).map_err(|e| {
        HostError::io(
            format!(
                "renaming {} to {}",
                temporary.dir().display(),
                paths.dir().display()
            ),
            &e,
        )
    })?;
    Ok(Answer::Done)
}

/// Writes `content` to a sibling temporary file, syncs it, renames it over `path`.
fn write_atomic(path: &Path, content: &[u8]) -> Result<Answer, HostError> {
    use std::io::Write;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| HostError::io(format!("writing {}", path.display()), &e))?;
    Ok(Answer::Done)
}

/// Removes `path` and everything below it; one already gone is done too.
fn remove_tree(path: &Path) -> Result<Answer, HostError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(HostError::io(format!("removing {}", path.display()), &e))
        }
        _ => Ok(Answer::Done),
    }
}

/// The VM's variable store in its data dir: kept, else moved from the run dir, else
/// copied from `template`.
fn keep_nvram(paths: &RunPaths, template: &Path) -> Result<Answer, HostError> {
    let nvram = paths.nvram();
    if nvram.exists() {
        return Ok(Answer::Done);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(paths.data())
        .map_err(|e| HostError::io(format!("creating {}", paths.data().display()), &e))?;
    let old = paths.run_dir_nvram();
    let (from, moving) = if old.is_file() {
        (old.as_path(), true)
    } else {
        (template, false)
    };
    let content = std::fs::read(from)
        .map_err(|e| HostError::io(format!("reading {}", from.display()), &e))?;
    write_atomic(&nvram, &content)?;
    if moving {
        std::fs::remove_file(&old)
            .map_err(|e| HostError::io(format!("removing {}", old.display()), &e))?;
    }
    Ok(Answer::Done)
}

/// The names of the directories below `root` (`<state dir>/vm`, `<state dir>/vmm-kernels`).
fn read_data_dirs(root: &Path) -> Result<Vec<String>, HostError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::io(format!("reading {}", root.display()), &e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| HostError::io(format!("reading {}", root.display()), &e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// What `path` is, as a launch would find it: it must be a file or a block device that
/// opens for reading; its first bytes say whether it is a qcow2 image.
fn inspect_file(path: &Path) -> FileFact {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return FileFact::Missing,
        Err(error) => return FileFact::Unreadable(error.to_string()),
    };
    let kind = metadata.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return FileFact::NotAFile;
    }
    let mut header = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut file| {
        let mut filled = 0;
        while filled < header.len() {
            match file.read(&mut header[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    });
    match read {
        Ok(filled) => FileFact::File {
            qcow2: filled == header.len() && &header == QCOW2_MAGIC,
        },
        Err(error) => FileFact::Unreadable(error.to_string()),
    }
}

/// Every directory below `roots.run`, with its record and live process.
fn read_run_dirs(roots: &VmRoots) -> Result<Vec<RunDir>, HostError> {
    let root = roots.run.as_path();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostError::io(format!("reading {}", root.display()), &e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| HostError::io(format!("reading {}", root.display()), &e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_dir {
            continue;
        }
        let paths = roots.paths(&name);
        let record = match std::fs::read(paths.record()) {
            Ok(bytes) => match RunRecord::parse(&bytes) {
                Ok(record) => RecordRead::Present(Box::new(record)),
                Err(why) => RecordRead::Foreign(why),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RecordRead::Missing,
            Err(e) => RecordRead::Foreign(format!("{RECORD_FILE}: {e}")),
        };
        let process = std::fs::read_to_string(paths.pid())
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .and_then(|pid| process_of(pid, &paths.pid()));
        // The console log: the recorded spec's `console.log`, else the run dir's.
        let log = match &record {
            RecordRead::Present(record) => record
                .spec
                .console
                .as_ref()
                .and_then(|c| c.log.as_ref())
                .map(PathBuf::from),
            _ => None,
        }
        .unwrap_or_else(|| paths.serial_log());
        dirs.push(RunDir {
            name,
            record,
            process,
            status: None,
            console: console_tail(&log),
        });
    }
    dirs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(dirs)
}

/// The end of the console log at `path` ([`TAIL_BYTES`]), when it can be read.
fn console_tail(path: &Path) -> Option<ConsoleTail> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(size.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    Some(ConsoleTail {
        size,
        tail: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Process `pid`, if it is alive and its command line names `pid_file` (the run dir's pid
/// file, which every backend's command line names: QEMU's `-pidfile`, gitvisor-vmm's
/// `--pid-file`).
fn process_of(pid: u32, pid_file: &Path) -> Option<Process> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = bytes
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let pid_file = pid_file.to_string_lossy();
    let escaped = pid_file.replace(',', ",,");
    argv.iter()
        .any(|arg| arg.contains(pid_file.as_ref()) || arg.contains(&escaped))
        .then(|| Process {
            pid,
            argv,
            started: started(pid),
        })
}

/// When process `pid` started.
fn started(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()?;
    start_time(&stat, &boot, u64::try_from(ticks).ok()?)
}

/// The start time `/proc/PID/stat` (`stat`) gives, with `/proc/stat` (`boot`) and
/// `ticks` clock ticks a second.
fn start_time(stat: &str, boot: &str, ticks: u64) -> Option<SystemTime> {
    // Field 22 is the 20th after the command name's closing parenthesis (fields 3, 4, …).
    let after_name = &stat[stat.rfind(')')? + 1..];
    let since_boot: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    if ticks == 0 {
        return None;
    }
    let millis = since_boot.checked_mul(1000)? / ticks;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(btime) + Duration::from_millis(millis))
}

/// Whether KVM opens, and where OVMF is.
fn host_facts() -> HostFacts {
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let uefi = UEFI_CANDIDATES
        .iter()
        .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
        .map(|(code, vars)| UefiFirmware {
            code: PathBuf::from(code),
            vars: PathBuf::from(vars),
        });
    HostFacts {
        kvm,
        uefi,
        memory: host_memory(),
    }
}

/// `MemTotal + SwapTotal` of `/proc/meminfo`, in bytes.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let kib: u64 = line
                .strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()?;
            kib.checked_mul(1024)
        })
    };
    field("MemTotal")?.checked_add(field("SwapTotal")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::vm::VirtualMachineSpec;

    fn record(name: &str) -> RunRecord {
        let spec: VirtualMachineSpec =
            serde_yaml::from_str("memory: 64MiB\nboot: {kernel: /k}").unwrap();
        RunRecord::new(name, spec, Vec::new())
    }

    #[test]
    fn a_run_dir_appears_whole_and_is_read_back_with_its_record() {
        let root = tempfile::tempdir().unwrap();
        let roots = VmRoots::new(root.path(), &root.path().join("state"));
        let vm_root = roots.run.clone();
        let paths = RunPaths::new(&roots, "vm1");
        let temporary = RunPaths::new(&roots, &temporary_dir_name("vm1"));
        let bytes = record("vm1").to_bytes().unwrap();
        create_run_dir(&vm_root, &paths, &temporary, &bytes).unwrap();
        assert!(!temporary.dir().exists());
        let again = create_run_dir(&vm_root, &paths, &temporary, &bytes).unwrap_err();
        assert!(again.message.contains("exists already"));
        std::fs::create_dir(vm_root.join("stray")).unwrap();
        std::fs::write(vm_root.join("stray/gitvisor.json"), b"{\"x\": 1}").unwrap();
        std::fs::write(vm_root.join("vm1/pid"), b"999999999\n").unwrap();
        let dirs = read_run_dirs(&roots).unwrap();
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[1].name, "vm1");
        assert_eq!(dirs[1].record, RecordRead::Present(Box::new(record("vm1"))));
        assert_eq!(
            dirs[1].process, None,
            "a pid that does not run is no process"
        );
        assert!(matches!(dirs[0].record, RecordRead::Foreign(_)));
    }

    #[test]
    fn only_a_process_naming_the_pid_file_counts() {
        let me = std::process::id();
        assert!(process_of(me, Path::new("/nonexistent/pid")).is_none());
        let argv0 = std::env::args().next().unwrap();
        let found = process_of(me, Path::new(&argv0)).expect("this process names its own path");
        assert_eq!(found.pid, me);
        let started = found.started.expect("this process's start time reads");
        let age = SystemTime::now().duration_since(started).unwrap();
        assert!(age < Duration::from_secs(3600), "started {age:?} ago");
    }

    #[test]
    fn a_start_time_is_ticks_after_boot_whatever_the_command_name() {
        let stat =
            "4242 (qemu) x (y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 2 0 12345 1000 50";
        let boot = "cpu  1 2 3
btime 1700000000
processes 9
";
        assert_eq!(
            start_time(stat, boot, 100),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_123_450))
        );
        assert_eq!(start_time("4242 (qemu) S 1", boot, 100), None);
        assert_eq!(start_time(stat, "cpu 1\n", 100), None);
    }

    #[test]
    fn the_nvram_moves_from_the_run_dir_once_and_is_then_kept() {
        let root = tempfile::tempdir().unwrap();
        let roots = VmRoots::new(&root.path().join("run"), &root.path().join("state"));
        let paths = roots.paths("vm1");
        let template = root.path().join("OVMF_VARS.fd");
        std::fs::write(&template, b"template").unwrap();
        std::fs::create_dir_all(paths.dir()).unwrap();
        std::fs::write(paths.run_dir_nvram(), b"the guest's boot entries").unwrap();
        keep_nvram(&paths, &template).unwrap();
        assert_eq!(
            std::fs::read(paths.nvram()).unwrap(),
            b"the guest's boot entries"
        );
        assert!(!paths.run_dir_nvram().exists(), "moved, not copied");
        std::fs::write(paths.nvram(), b"changed by the guest").unwrap();
        keep_nvram(&paths, &template).unwrap();
        assert_eq!(
            std::fs::read(paths.nvram()).unwrap(),
            b"changed by the guest"
        );
        assert_eq!(read_data_dirs(&roots.data).unwrap(), ["vm1"]);
        let fresh = roots.paths("vm2");
        keep_nvram(&fresh, &template).unwrap();
        assert_eq!(std::fs::read(fresh.nvram()).unwrap(), b"template");
    }
}
