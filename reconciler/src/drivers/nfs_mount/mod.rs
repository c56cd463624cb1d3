//! The NfsMount driver: NFS shares mounted on this host (`docs/nfs.md`).
//!
//! # Why it looks like this
//!
//! A share belongs to a server that can go away, and everything that touches a mount
//! of a dead server can wait for it. So the driver never touches the mount:
//!
//! - it sees mounts only in `/proc/self/mountinfo` (the kernel's table, which answers
//!   at once), never by `stat`ing a mount point;
//! - it asks whether the server is up with a TCP connect to port 2049 under a 3 s
//!   deadline, and says "share unreachable" in the plan when it is not, without
//!   waiting for it; what does not use the share carries on;
//! - it finds who holds a mount from the links in `/proc/PID` (`holders.rs`), never by
//!   opening anything under the mount;
//! - `mount` and `umount` run as child processes under a deadline, killed when it
//!   passes (`host.rs`), and every file operation is on a blocking thread under one;
//! - it mounts `soft,timeo=50,retrans=2` by default (`spec::DEFAULT_OPTIONS`): calls on
//!   a dead share fail after about 15 s instead of hanging the VMs and containers that
//!   use it (and `retry=0`: `mount.nfs` tries once).
//!
//! # Ownership
//!
//! A mount has no place for a marker that NFS would keep (no label; extended attributes
//! would live on the server's files). The marker is gitvisor's record of each mount it
//! made (`seam::MountRecord` in `<run dir>/nfs/NAME.json`: source, path and the kernel's
//! mount ID, which a mount made again by hand at the same place does not have); the
//! state store is the other half, as for every kind. A mount gitvisor did not make is
//! never unmounted; one at a declared path is a conflict unless adopted.
//!
//! # Order of steps
//!
//! 1. **plan**: [`NfsSeam::observe`] once (mount table and records); ask each declared
//!    server whether it answers (concurrently, 3 s at most); decide per declared mount
//!    (`diff.rs`); add deletes for records no longer declared; for every change that
//!    unmounts, name the processes that hold the mount.
//! 2. **apply** (`apply.rs`), from that snapshot.
//!
//! # Seam
//!
//! [`HostMounts`] for real, [`FakeMounts`] (recording, in memory) for tests.

mod apply;
mod diff;
mod error;
pub mod fake;
mod holders;
pub mod host;
mod kind;
pub mod mountinfo;
mod probe;
pub mod seam;
mod spec;
#[cfg(test)]
mod tests;
pub(crate) mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::contract::{
    Action, Change, ContractViolation, Driver, DriverError, PlanContext, StepContext, WatchSink,
    Watching,
};
use crate::model::{Kind, Resource};

pub use diff::ObservedMount;
pub use error::NfsMountError;
pub use fake::FakeMounts;
pub use host::HostMounts;
pub use kind::REGISTRATION;
pub use seam::{Holder, MountRecord, NfsHost, NfsHostError, NfsRequest, NfsSeam};
pub use spec::{DEFAULT_MOUNT_DIR, DEFAULT_OPTIONS, DEFAULT_STATE_DIR, NfsMountSpec};

/// How long one NfsMount step may take: an unmount and a mount, each under its own
/// deadline, and the reads around them.
pub const STEP_BUDGET: Duration = Duration::from_secs(120);

/// Plans and applies `kind: NfsMount` resources through an [`NfsSeam`].
#[derive(Clone)]
pub struct NfsMountDriver {
    seam: Arc<dyn NfsSeam>,
    state_dir: PathBuf,
}

impl std::fmt::Debug for NfsMountDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsMountDriver")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl NfsMountDriver {
    /// A driver over any seam; default mount paths go under `state_dir`.
    pub fn new(seam: Arc<dyn NfsSeam>, state_dir: PathBuf) -> Self {
        NfsMountDriver { seam, state_dir }
    }

    /// The registry's constructor: this host's mounts, records in the run dir. Checks
    /// nothing (a host without NFS can run the other kinds); `plan` says what is missing
    /// when a share is declared.
    pub(crate) fn connect_driver(
        settings: &crate::drivers::HostSettings,
    ) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(NfsMountDriver::new(
            Arc::new(HostMounts::new(&settings.run_dir)),
            settings.state_dir.clone(),
        )))
    }
}

/// Where the NfsMount `name` (declared as `spec`) is mounted on a host whose state dir
/// is `state_dir`: for the kinds that use a share (a container's mount).
pub fn mount_path(spec: &NfsMountSpec, name: &str, state_dir: &std::path::Path) -> PathBuf {
    spec.mount_path(name, state_dir)
}

#[async_trait]
impl Driver for NfsMountDriver {
    fn kind(&self) -> Kind {
        Kind::NfsMount
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let mut specs = Vec::with_capacity(desired.len());
        for resource in desired {
            let Some(spec) = resource.spec.get::<NfsMountSpec>() else {
                return Err(ContractViolation {
                    id: resource.id(),
                    message: "the NfsMount driver was handed a resource of another kind".into(),
                }
                .into());
            };
            specs.push((resource, spec));
        }
        let host = self
            .seam
            .observe()
            .await
            .map_err(|cause| NfsMountError::Observe { cause })?;
        if desired.is_empty() && host.records.is_empty() {
            return Ok(Vec::new());
        }
        let servers: BTreeSet<&str> = specs
            .iter()
            .filter(|(resource, _)| context.in_focus(&resource.id()))
            .map(|(_, spec)| spec.server.as_str())
            .collect();
        let answers =
            futures::future::join_all(servers.iter().map(|server| async move {
                (server.to_string(), self.seam.reachable(server).await)
            }))
            .await;
        let reachable: BTreeMap<String, Result<(), String>> = answers.into_iter().collect();
        let planning = diff::Planning {
            host: &host,
            context,
            reachable: &reachable,
            state_dir: &self.state_dir,
        };
        let mut changes = Vec::with_capacity(specs.len());
        for (resource, spec) in &specs {
            if !context.in_focus(&resource.id()) {
                changes.push(Change::carried(resource));
                continue;
            }
            let change = diff::declared(resource, spec, &planning);
            let change = match (&host.no_client, change.action) {
                (Some(why), Action::Create | Action::Update) => Change {
                    action: Action::Unsupported,
                    ..change
                }
                .with_first_reason(format!(
                    "NfsMount {}: this host cannot mount NFS shares ({why}); install nfs-common (apt install nfs-common), see gitvisor doctor",
                    resource.metadata.name
                )),
                _ => change,
            };
            changes.push(change);
        }
        let declared: BTreeSet<&str> = specs
            .iter()
            .map(|(resource, _)| resource.metadata.name.as_str())
            .collect();
        changes.extend(diff::pruned(&declared, &planning));
        // Name who holds a mount that a change takes away (apply looks again).
        for change in &mut changes {
            let Some(observed) = change.observed_as::<ObservedMount>() else {
                continue;
            };
            let Some(current) = observed
                .current
                .as_ref()
                .filter(|_| observed.mount || change.action == Action::Delete)
            else {
                continue;
            };
            let holders = self.seam.holders(current).await.unwrap_or_default();
            if !holders.is_empty() {
                let names: Vec<String> = holders.iter().map(ToString::to_string).collect();
                change.reasons.insert(
                    0,
                    format!(
                        "{} is in use, so apply will not unmount it until they let go: {}",
                        current.mount_point,
                        names.join(", ")
                    ),
                );
            }
        }
        Ok(changes)
    }

    /// Not watched: mounts announce nothing but a poll of `/proc/self/mountinfo`; the
    /// resync looks.
    fn watch(&self, _sink: WatchSink) -> Result<Watching, DriverError> {
        Ok(Watching::NotWatched {
            why: "mounts are read from /proc/self/mountinfo at every resync".into(),
        })
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        apply::apply(self.seam.as_ref(), change, step).await
    }

    fn step_budget(&self, _change: &Change) -> Duration {
        STEP_BUDGET
    }
}
