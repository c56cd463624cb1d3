//! The host seam of the NfsMount driver: what it reads and the requests it sends, as
//! plain values.
//!
//! [`NfsSeam::observe`] reads the mount table (`/proc/self/mountinfo`) and gitvisor's
//! mount records in one batch; [`NfsSeam::reachable`] asks whether the server answers
//! on the NFS port (a TCP connect under a short deadline, never a call on the mount);
//! [`NfsSeam::holders`] finds the processes that hold a mount; [`NfsSeam::mount`] and
//! [`NfsSeam::send`] change the host. The real implementation is
//! [`HostMounts`](super::host::HostMounts); unit tests use the recording
//! [`FakeMounts`](super::fake::FakeMounts).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::mountinfo::MountEntry;
use crate::contract::{Classify, FailureClass};

/// gitvisor's record of a mount it made: the marker half of ownership, kept in
/// `<run dir>/nfs/NAME.json`. Written *before* the mount (without `mount_id`: a crash
/// between the two leaves a record that claims the mount at `path` from `source`), and
/// again with the kernel's mount ID once the mount exists, so a mount made again by
/// hand at the same place (a new ID) is not taken for gitvisor's.
///
/// A mount carries no label of its own that NFS would keep (no xattr or option the
/// share would not pass through), and the run dir is a tmpfs: after a reboot the
/// records are gone together with the mounts they describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub name: String,
    pub source: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u64>,
}

impl MountRecord {
    /// Whether `entry` is the mount this record describes.
    pub fn describes(&self, entry: &MountEntry) -> bool {
        entry.is_nfs()
            && entry.mount_point == self.path
            && entry.source == self.source
            && self.mount_id.is_none_or(|id| id == entry.mount_id)
    }
}

/// Every mount and every record, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NfsHost {
    /// The mount table, in mount order (a later mount on the same point hides the
    /// earlier one).
    pub mounts: Vec<MountEntry>,
    /// gitvisor's records, by resource name.
    pub records: BTreeMap<String, MountRecord>,
    /// Why NFS shares cannot be mounted here (no `mount.nfs`), or `None`.
    pub no_client: Option<String>,
}

impl NfsHost {
    /// The mount visible at `path` (the last one made there).
    pub fn mount_at(&self, path: &str) -> Option<&MountEntry> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }
}

/// A process that holds a mount: its files, working directory or root are on it, or
/// it has the share mounted in a mount namespace of its own (a container's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// `has /mnt/x/f open`, `works in /mnt/x`, `mounts it at /data`.
    pub how: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({}) {}", self.pid, self.command, self.how)
    }
}

/// One change besides a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NfsRequest {
    /// Writes (or replaces) gitvisor's record of a mount.
    WriteRecord(MountRecord),
    /// Removes the record of `name`.
    RemoveRecord { name: String },
    /// `umount PATH` (never lazy, never forced: a held mount stays).
    Unmount { path: String },
}

impl fmt::Display for NfsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NfsRequest::WriteRecord(record) => write!(
                f,
                "record the mount of {} at {}",
                record.source, record.path
            ),
            NfsRequest::RemoveRecord { name } => write!(f, "forget the mount record of {name}"),
            NfsRequest::Unmount { path } => write!(f, "unmount {path}"),
        }
    }
}

/// What the host answered to a read or a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NfsHostError {
    #[error("cannot read {what}: {message}")]
    Read { what: String, message: String },
    #[error("cannot write {what}: {message}")]
    Write { what: String, message: String },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{what} did not finish within {}s (the server may be gone) and was stopped", .deadline.as_secs())]
    TimedOut { what: String, deadline: Duration },
    #[error("cannot run {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("mounted {path}, but the mount table shows nothing there afterwards")]
    Vanished { path: String },
}

impl Classify for NfsHostError {
    fn class(&self) -> FailureClass {
        match self {
            NfsHostError::TimedOut { .. } | NfsHostError::Spawn { .. } => FailureClass::Transient,
            NfsHostError::Failed { stderr, .. } => {
                let stderr = stderr.to_ascii_lowercase();
                let transient = [
                    "timed out",
                    "busy",
                    "connection refused",
                    "no route",
                    "unreachable",
                    "resource temporarily",
                ];
                if transient.iter().any(|word| stderr.contains(word)) {
                    FailureClass::Transient
                } else {
                    FailureClass::NeedsUser
                }
            }
            NfsHostError::Read { .. }
            | NfsHostError::Write { .. }
            | NfsHostError::Vanished { .. } => FailureClass::NeedsUser,
        }
    }
}

/// The host as the NfsMount driver sees it. Shared by concurrent steps: `&self`.
#[async_trait]
pub trait NfsSeam: Send + Sync {
    /// The mount table and every record, in one read.
    async fn observe(&self) -> Result<NfsHost, NfsHostError>;

    /// Whether `server` answers on the NFS port, within a short deadline; `Err` says why
    /// not (no address, refused, timed out).
    async fn reachable(&self, server: &str) -> Result<(), String>;

    /// The processes holding `mount` (see [`Holder`]).
    async fn holders(&self, mount: &MountEntry) -> Result<Vec<Holder>, NfsHostError>;

    /// Makes `path` (when missing) and mounts `source` there with `options`, under a
    /// deadline; answers the new mount's ID.
    async fn mount(
        &self,
        source: &str,
        path: &str,
        options: &[String],
    ) -> Result<u64, NfsHostError>;

    /// Carries out one other request.
    async fn send(&self, request: &NfsRequest) -> Result<(), NfsHostError>;
}
