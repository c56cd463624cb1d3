//! The host seam of the container driver: what it reads (one [`ContainerHost::list`] for
//! every container) and the requests it sends, as plain values (`PartialEq`, `Display`).
//!
//! The real implementation ([`RuncHost`](super::host::RuncHost)) drives `runc` under
//! gitvisor's own runtime root, the image store, overlayfs and netlink; the recording
//! [`FakeHost`](super::fake::FakeHost) behaves like it in memory for unit tests.
//!
//! Requests are idempotent where the host allows: deleting a container that is gone,
//! stopping one that is not running, unmounting a root file system that is not mounted
//! all succeed, after checking that the host really is that way. Creating a container
//! whose id is taken is an error (the driver deletes what it observed first).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::etc_files::EtcFiles;
use super::image::PreparedImage;
use crate::drivers::vlan_port::VlanDrift;
use crate::model::{Cidr, Vlan};

/// The annotation that marks a container as gitvisor's (its value: the resource name).
pub const MANAGED_ANNOTATION: &str = "gitvisor.dev/managed";
/// The annotation holding the declaration the container was created from (JSON).
pub const APPLIED_ANNOTATION: &str = "gitvisor.dev/applied";

/// A container's status as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeStatus {
    /// `runc create` is under way.
    Creating,
    /// Created; its process waits for `start`.
    Created,
    Running,
    Paused,
    /// Its process has exited; the container remains until deleted.
    Stopped,
    /// gitvisor prepared its bundle (and wrote its intent marker there) but the runtime
    /// has no such container: its create failed, or was interrupted before `runc create`.
    /// What the create left (bundle, writable layer, mount, logs) is cleaned when the
    /// container is pruned; a declared one is simply created again.
    NotCreated,
}

impl RuntimeStatus {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "creating" => RuntimeStatus::Creating,
            "created" => RuntimeStatus::Created,
            "running" => RuntimeStatus::Running,
            "paused" => RuntimeStatus::Paused,
            "stopped" => RuntimeStatus::Stopped,
            _ => return None,
        })
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeStatus::Creating => "creating",
            RuntimeStatus::Created => "created",
            RuntimeStatus::Running => "running",
            RuntimeStatus::Paused => "paused",
            RuntimeStatus::Stopped => "stopped",
            RuntimeStatus::NotCreated => "not created (its create failed)",
        })
    }
}

/// Resource limits as the container's cgroup has them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Bytes; `None`: unlimited.
    pub memory: Option<u64>,
    /// CPU quota in cores (quota / period); `None`: unlimited.
    pub cpus: Option<f64>,
    /// `None`: unlimited.
    pub pids: Option<u64>,
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
        write!(
            f,
            "memory {}, cpus {}, pids {}",
            show(self.memory.map(|m| m.to_string())),
            show(self.cpus.map(|c| c.to_string())),
            show(self.pids.map(|p| p.to_string()))
        )
    }
}

/// How a container's last process ended, as its supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// The exit code; 128 + N for a process killed by signal N.
    pub code: i32,
    /// When it exited.
    #[serde(with = "humantime_serde_compat")]
    pub at: SystemTime,
    /// Set when the supervisor killed it because its health check failed.
    #[serde(default)]
    pub unhealthy: bool,
}

/// What the health check says now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failures.
    pub failures: u32,
    /// The last check's output (trimmed), or why it could not run.
    pub last_output: String,
}

/// One container under gitvisor's runtime root, as the host has it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeContainer {
    pub id: String,
    pub status: RuntimeStatus,
    /// The container's init process, when it has one.
    pub pid: Option<u32>,
    pub annotations: BTreeMap<String, String>,
    /// Read from its cgroup, when it has one.
    pub limits: Option<Limits>,
    /// How its last process ended, when its supervisor saw it end.
    pub exit: Option<ExitRecord>,
    pub health: Option<HealthRecord>,
    /// How many times gitvisor restarted it since it was created.
    pub restarts: u32,
    /// When its current process was started.
    pub started: Option<SystemTime>,
    /// gitvisor stopped it (it was declared `Stopped`), as opposed to its process ending.
    pub stopped_by_gitvisor: bool,
    /// Its `/etc/resolv.conf` as gitvisor wrote it ([`super::etc_files`]); `None` for a
    /// container made before gitvisor wrote one.
    pub resolv_conf: Option<String>,
}

impl RuntimeContainer {
    /// What a create that failed leaves: gitvisor's intent marker, which the runtime never
    /// listed ([`RuntimeStatus::NotCreated`]), under the container's name.
    pub fn not_created(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            status: RuntimeStatus::NotCreated,
            pid: None,
            annotations: [(MANAGED_ANNOTATION.to_owned(), id.to_owned())].into(),
            limits: None,
            exit: None,
            health: None,
            restarts: 0,
            started: None,
            stopped_by_gitvisor: false,
            resolv_conf: None,
        }
    }
}

/// A bind mount or a block device's file system, inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path, bind-mounted.
    Bind(PathBuf),
    /// A block device (a managed Volume) with its file system type.
    Device { path: PathBuf, fstype: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// Everything the runtime config (`config.json`) is made from, resolved: the process
/// after the image's defaults were applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    pub id: String,
    pub args: Vec<String>,
    /// `KEY=value`, in order.
    pub env: Vec<String>,
    pub cwd: String,
    /// `uid[:gid]` or `name[:group]`, resolved against the image's `/etc/passwd` and
    /// `/etc/group`; `None`: root.
    pub user: Option<String>,
    pub mounts: Vec<ContainerMount>,
    pub limits: Limits,
    pub annotations: BTreeMap<String, String>,
    /// Health check run by the container's supervisor.
    pub health: Option<HealthConfig>,
    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, bind-mounted from the bundle.
    pub etc_files: EtcFiles,
}

/// A health check as the supervisor runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthConfig {
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// The container's link to a bridge: a veth pair, host end on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPlan {
    /// The host end's name (derived from the container's name).
    pub host_name: String,
    /// The host end's `ifalias` (`gitvisor:container/NAME`).
    pub alias: String,
    pub bridge: String,
    pub address: Option<Cidr>,
    pub gateway: Option<IpAddr>,
    /// The VLANs the host end carries on the bridge, sorted by id: `Some` when the
    /// revision declares the bridge with `vlanFiltering: true` (the network's `vlans`,
    /// or the kernel's default), `None` when VLANs are not looked at.
    pub vlans: Option<Vec<Vlan>>,
}

/// One request to the host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRequest {
    /// Import the image into the store unless it is there. Answers [`Answer::Image`].
    PrepareImage {
        image: String,
    },
    /// Make the bundle (a fresh writable layer unless `keep_writable_layer`), mount the
    /// root file system, write `config.json` and `runc create` (marker annotations
    /// included), or `runc run --detach` when `start` (a container with nothing to set
    /// up between create and start: no veth; runc brings its loopback up). Answers
    /// [`Answer::Pid`].
    Create {
        config: Box<ContainerConfig>,
        image: Box<PreparedImage>,
        keep_writable_layer: bool,
        start: bool,
    },
    /// Configure the container's network namespace: loopback up, and the veth when
    /// there is one.
    Connect {
        id: String,
        pid: u32,
        veth: Option<VethPlan>,
    },
    Start {
        id: String,
    },
    /// SIGTERM, up to `grace` for the process to exit, then SIGKILL.
    Stop {
        id: String,
        grace: Duration,
    },
    /// `runc delete --force`: the container goes, its bundle and writable layer stay.
    Delete {
        id: String,
    },
    /// Delete, unmount the root file system, and remove the bundle, writable layer and
    /// host veth; with `logs`, its log files too (a prune: nothing will write them
    /// again; a replace keeps them for the container that follows).
    Remove {
        id: String,
        veth: Option<String>,
        logs: bool,
    },
    /// `runc update`: new cgroup limits, in place.
    Update {
        id: String,
        limits: Limits,
    },
    /// Change the VLANs of the container's host veth end `veth` on its bridge, in place.
    SetVlans {
        id: String,
        veth: String,
        vlans: VlanDrift,
    },
    /// Rewrite the container's `/etc/resolv.conf` in place (the same file, which the
    /// container sees through its bind mount).
    WriteResolvConf {
        id: String,
        content: String,
    },
}

impl fmt::Display for HostRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRequest::PrepareImage { image } => write!(f, "prepare image {image}"),
            HostRequest::Create {
                keep_writable_layer,
                start,
                ..
            } => f.write_str(match (keep_writable_layer, start) {
                (true, false) => "create the container again (keeping its writable layer)",
                (true, true) => "create and start the container again (keeping its writable layer)",
                (false, false) => "create the container",
                (false, true) => "create and start the container",
            }),
            HostRequest::Connect { veth: None, .. } => f.write_str("set up loopback"),
            HostRequest::Connect {
                veth: Some(veth), ..
            } => write!(
                f,
                "connect to bridge {} via {}",
                veth.bridge, veth.host_name
            ),
            HostRequest::Start { .. } => f.write_str("start"),
            HostRequest::Stop { grace, .. } => write!(
                f,
                "stop (SIGTERM, SIGKILL after {})",
                humantime::format_duration(*grace)
            ),
            HostRequest::Delete { .. } => f.write_str("delete the stopped container"),
            HostRequest::Remove { .. } => f.write_str("remove"),
            HostRequest::Update { limits, .. } => write!(f, "update limits to {limits}"),
            HostRequest::SetVlans { veth, vlans, .. } => {
                let list: Vec<String> = vlans.new.iter().map(ToString::to_string).collect();
                write!(f, "put {veth} on VLANs {}", list.join(", "))
            }
            HostRequest::WriteResolvConf { .. } => f.write_str("rewrite /etc/resolv.conf"),
        }
    }
}

/// What a request answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Done,
    Image(PreparedImage),
    Pid(u32),
}

/// The seam's failure: the host's answer, without the container or operation (the
/// driver adds those).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{program} {args} failed ({status}): {stderr}")]
    Command {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {program}; install it (Debian: apt install {program})")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} did not finish within {}", humantime::format_duration(*after))]
    Timeout {
        program: String,
        args: String,
        after: Duration,
    },
    #[error(transparent)]
    Image(#[from] super::image::ImageError),
    #[error("{operation}")]
    Netlink {
        operation: String,
        #[source]
        source: crate::drivers::bridge::NetlinkError,
    },
    #[error("{operation} {}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The declaration cannot work on this host or with this image.
    #[error("{0}")]
    Invalid(String),
    /// The runtime answered something gitvisor does not understand.
    #[error("{0}")]
    Unexpected(String),
}

impl HostError {
    pub fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> HostError {
        let path = path.into();
        move |source| HostError::Io {
            operation,
            path,
            source,
        }
    }

    pub fn class(&self) -> crate::contract::FailureClass {
        use crate::contract::{Classify, FailureClass};
        match self {
            HostError::Command { args, stderr, .. } => super::runc::failure_class(args, stderr),
            HostError::Timeout { .. } | HostError::Unexpected(_) => FailureClass::Transient,
            HostError::Spawn { .. } | HostError::Invalid(_) => FailureClass::NeedsUser,
            HostError::Image(error) => error.class(),
            HostError::Netlink { source, .. } => source.class(),
            HostError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => {
                    FailureClass::NeedsUser
                }
                _ => FailureClass::Transient,
            },
        }
    }
}

/// The host as the container driver sees it. Shared by concurrent applies.
#[async_trait]
pub trait ContainerHost: Send + Sync {
    /// Every container under gitvisor's runtime root: one `runc list`, plus what each
    /// container's own files say (cgroup limits, exit and health records), plus the
    /// bundles whose create failed ([`RuntimeStatus::NotCreated`]).
    async fn list(&self) -> Result<Vec<RuntimeContainer>, HostError>;

    /// Every bridge port's VLANs, by link name: one bridge VLAN dump of the whole host.
    /// Asked only when a declared container's bridge filters VLANs.
    async fn port_vlans(&self) -> Result<BTreeMap<String, Vec<Vlan>>, HostError>;

    /// The host's resolver configuration a container's `/etc/resolv.conf` starts from
    /// ([`super::etc_files::host_resolver_text`]); empty when the host has none. Asked
    /// once per plan that declares a container.
    async fn host_resolver(&self) -> Result<String, HostError>;

    /// Of these `image:` values, the local ones (`/path`, `/path:TAG`) that are not on
    /// this host: neither the path nor, for `PATH:TAG`, the path without the tag exists.
    /// Registry references are never in the answer. One batch, asked by the plan.
    async fn missing_images(&self, images: Vec<String>) -> Result<BTreeSet<String>, HostError>;

    /// Carry out one request.
    async fn send(&self, request: HostRequest) -> Result<Answer, HostError>;

    /// Where a container's log file is.
    fn log_path(&self, id: &str) -> PathBuf;
}

/// Serialises `SystemTime` as seconds and nanoseconds since the epoch.
mod humantime_serde_compat {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        (since.as_secs(), since.subsec_nanos()).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let (secs, nanos) = <(u64, u32)>::deserialize(deserializer)?;
        Ok(UNIX_EPOCH + Duration::new(secs, nanos))
    }
}
