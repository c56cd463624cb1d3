//! The host seam of the VM driver: what it reads and the requests it sends, as values.
//!
//! [`VmHost::observe`] reads the whole host in one batch: one pass over the run dirs
//! (records, pid files, `/proc/PID/cmdline` and `stat`), one over the data dirs, one link
//! dump (the taps, found by their `gitvisor:vm/` alias, and the bridges), the monitor's
//! status of every live VM (concurrently, each with a timeout), the DHCP leases of
//! gitvisor's dnsmasq (for the guests' addresses), and two host facts (KVM, UEFI firmware).
//! [`VmHost::inspect`] is the plan's second batch read: the files the declared VMs'
//! launches would open (`preflight.rs`).
//! [`VmHost::send`] carries out one [`VmRequest`]. The real host is `host.rs`; unit tests
//! use the recording `FakeHost` (`fake.rs`), which behaves like QEMU and the kernel.
//!
//! Requests are idempotent where the host can say so truthfully: removing a run dir or a
//! link that is gone succeeds; giving a VM its NVRAM where it has one keeps it (that is
//! its point). Creating a run dir or a tap whose name is taken
//! fails: the driver only creates what it observed absent.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::console::ConsoleTail;
use super::launch::HostFacts;
use super::monitor::{Control, GuestStatus};
use super::preflight::FileFacts;
use super::record::RunRecord;
use crate::contract::FailureClass;
use crate::drivers::bridge::{LinkRequest, LinkState, NetlinkError};
use crate::drivers::network::Leases;
use crate::drivers::vm::Hypervisor;

/// The host as one batch read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostSnapshot {
    /// Every directory below `<run dir>/vm`, VMs' and temporary ones.
    pub run_dirs: Vec<RunDir>,
    /// The names of the directories below `<state dir>/vm`: VMs' data dirs.
    pub data_dirs: Vec<String>,
    /// The names of the directories below `<state dir>/vmm-kernels`: the builtin VMM's
    /// kernel cache, one per kernel path (`kernel_cache.rs`).
    pub kernel_caches: Vec<String>,
    /// Every link in this network namespace.
    pub links: Vec<LinkState>,
    /// The DHCP leases of gitvisor's dnsmasq, per bridge (empty when none serves DHCP or
    /// they could not be read).
    pub leases: Leases,
    pub facts: HostFacts,
}

/// One directory below `<run dir>/vm`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    /// The directory's name: a VM's name, or a temporary `_new.<vm>`.
    pub name: String,
    pub record: RecordRead,
    /// The VM's process, when one is alive whose command line names this run dir.
    pub process: Option<Process>,
    /// What the monitor says, when there is a process: its status, or why it could
    /// not be asked.
    pub status: Option<Result<GuestStatus, String>>,
    /// The end of its console log, when there is one ([`super::console`]).
    pub console: Option<ConsoleTail>,
}

/// The record file of a run dir.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordRead {
    Present(Box<RunRecord>),
    Missing,
    /// There is a file, but not gitvisor's record (or not readable): why.
    Foreign(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Its command line, from `/proc/PID/cmdline`.
    pub argv: Vec<String>,
    /// When it started (`/proc/PID/stat`'s start time after `/proc/stat`'s boot time), if
    /// that could be read.
    pub started: Option<SystemTime>,
}

/// A file of a run dir that gitvisor writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFile {
    Seed,
}

impl RunFile {
    pub fn file_name(self) -> &'static str {
        match self {
            RunFile::Seed => super::paths::SEED_FILE,
        }
    }
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq)]
pub enum VmRequest {
    /// Make the run dir `vm` with `record` in it: under the temporary name, then renamed.
    /// Fails when the directory exists.
    CreateRunDir { vm: String, record: RunRecord },
    /// Replace the record of an existing run dir (atomically: a new file renamed over).
    WriteRecord { vm: String, record: RunRecord },
    /// Remove a directory below `<run dir>/vm` and everything in it; gone is done.
    RemoveRunDir { dir: String },
    /// Write a run dir file (atomically).
    WriteFile {
        vm: String,
        file: RunFile,
        content: Vec<u8>,
    },
    /// Give the VM its UEFI variable store in its data dir (made if missing): kept if it
    /// is there; else moved from the run dir, where earlier versions kept it; else
    /// copied from OVMF's `template`.
    KeepNvram { vm: String, template: PathBuf },
    /// Remove the VM's data dir and everything in it; gone is done.
    RemoveDataDir { vm: String },
    /// Remove a kernel cache directory below `<state dir>/vmm-kernels` (one no declared
    /// VM boots from); gone is done.
    RemoveKernelCache { dir: String },
    /// Create a persistent tap, down, without alias. Answers its index.
    CreateTap { name: String },
    /// The index of the link called `name`, if any ([`Answer::Index`] or
    /// [`Answer::Absent`]).
    FindLink { name: String },
    /// A link request (alias, rename, enslave, up, delete) as the Bridge driver sends them.
    Link(LinkRequest),
    /// Start the VM's hypervisor from `argv` (program first) and wait until it has
    /// detached.
    Launch { vm: String, argv: Vec<String> },
    /// Send a command to the VM's monitor.
    Control {
        vm: String,
        hypervisor: Hypervisor,
        command: Control,
    },
    /// Wait up to `within` for process `pid` to end. Answers [`Answer::Exited`].
    WaitExit {
        vm: String,
        pid: u32,
        within: Duration,
    },
    /// SIGKILL process `pid`, if it is still the VM's (its command line names the run
    /// dir).
    Kill { vm: String, pid: u32 },
}

impl fmt::Display for VmRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmRequest::CreateRunDir { vm, .. } => write!(f, "create the run dir of {vm}"),
            VmRequest::WriteRecord { .. } => f.write_str("write the run record"),
            VmRequest::RemoveRunDir { dir } => write!(f, "remove run dir {dir}"),
            VmRequest::WriteFile { file, content, .. } => {
                write!(f, "write {} ({} bytes)", file.file_name(), content.len())
            }
            VmRequest::KeepNvram { template, .. } => write!(
                f,
                "keep the UEFI variable store in the data dir (first start: copy {})",
                template.display()
            ),
            VmRequest::RemoveDataDir { vm } => write!(f, "remove the data dir of {vm}"),
            VmRequest::RemoveKernelCache { dir } => write!(f, "remove kernel cache {dir}"),
            VmRequest::CreateTap { name } => write!(f, "create tap {name}"),
            VmRequest::FindLink { name } => write!(f, "look up link {name}"),
            VmRequest::Link(request) => write!(f, "{}", describe_link(request)),
            VmRequest::Launch { argv, .. } => write!(
                f,
                "launch {}",
                argv.first().map(String::as_str).unwrap_or("(nothing)")
            ),
            VmRequest::Control {
                command,
                hypervisor,
                ..
            } => f.write_str(command.name_for(*hypervisor)),
            VmRequest::WaitExit { pid, within, .. } => write!(
                f,
                "wait up to {} for process {pid} to end",
                humantime::format_duration(*within)
            ),
            VmRequest::Kill { pid, .. } => write!(f, "kill process {pid}"),
        }
    }
}

fn describe_link(request: &LinkRequest) -> String {
    match request {
        LinkRequest::SetAlias { index, alias } => format!("mark link #{index} as {alias}"),
        LinkRequest::SetName { index, name } => format!("rename link #{index} to {name}"),
        LinkRequest::SetMaster {
            port_index,
            master: Some(master),
        } => format!("enslave link #{port_index} to bridge #{master}"),
        LinkRequest::SetMaster { port_index, .. } => format!("release link #{port_index}"),
        LinkRequest::SetUp { index, up: true } => format!("set link #{index} up"),
        LinkRequest::SetUp { index, up: false } => format!("set link #{index} down"),
        LinkRequest::DeleteLink { index } => format!("delete link #{index}"),
        LinkRequest::AddBridgeVlan { index, vlan, .. } => {
            format!("put link #{index} on VLAN {vlan}")
        }
        LinkRequest::DelBridgeVlan { index, id, .. } => {
            format!("take link #{index} off VLAN {id}")
        }
        other => format!("{other:?}"),
    }
}

/// What a request answers besides success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Done,
    Index(u32),
    Absent,
    /// Whether the process ended within the wait.
    Exited(bool),
}

/// The host's answer to a failed request or observe: what it said, and whether asking
/// again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub message: String,
    pub class: FailureClass,
}

impl HostError {
    pub fn new(message: impl Into<String>, class: FailureClass) -> Self {
        HostError {
            message: message.into(),
            class,
        }
    }

    /// An I/O error on `what`: a permission or a missing program needs a person, the rest
    /// (busy, interrupted, a race) may pass.
    pub fn io(what: impl fmt::Display, error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let class = match error.kind() {
            ErrorKind::PermissionDenied
            | ErrorKind::NotFound
            | ErrorKind::InvalidInput
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::StorageFull => FailureClass::NeedsUser,
            _ => FailureClass::Transient,
        };
        HostError::new(format!("{what}: {error}"), class)
    }
}

impl From<NetlinkError> for HostError {
    fn from(error: NetlinkError) -> Self {
        let class = error.class();
        HostError::new(error.message, class)
    }
}

/// The host as the VM driver sees it. Shared by concurrent applies: `Send + Sync`, `&self`.
#[async_trait]
pub trait VmHost: Send + Sync {
    /// The whole host, in one batch.
    async fn observe(&self) -> Result<HostSnapshot, HostError>;

    /// What the files at `paths` are (missing, not a file, unreadable, or a file and
    /// whether it is a qcow2 image), in one batch: the declared kernels, initrds, disk
    /// images and ISOs, checked before a launch is planned or a guest stopped for one.
    async fn inspect(&self, paths: Vec<PathBuf>) -> Result<FileFacts, HostError>;

    /// Carry out one request.
    async fn send(&self, request: VmRequest) -> Result<Answer, HostError>;
}
