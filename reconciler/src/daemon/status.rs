//! What the controller shows about itself (`GET /v1/status`, `gitvisor status` while it
//! runs): the source, the revision applied and the one rejected, the last reconcile, and
//! every resource with the store's status and its retry. A snapshot, replaced after each
//! reconcile, so a status request never waits for one or touches the host. Containers
//! also carry how they are doing now (`live`), which the container driver's watch
//! updates between reconciles ([`crate::contract::HostEvent::Live`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::retry::RetryView;
use super::trigger::Reasons;
use crate::model::{Name, ResourceId};
use crate::plan::PruneWithheld;
use crate::state::{ResourceState, RevisionRecord};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// `--source` as given (a directory, or a git URL with `#path`).
    pub source: String,
    /// The git ref followed, for a git source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub host: String,
    pub pid: u32,
    pub started_unix: u64,
    /// A reconcile is running now.
    pub reconciling: bool,
    /// The revision the host is kept at (the last good one), as the store recorded it.
    pub applied: Option<RevisionRecord>,
    /// The source's newest revision, when it was rejected: the host stays at `applied`.
    pub rejected: Option<Rejected>,
    /// The source could not be read at the last attempt (the host stays as it is).
    pub source_error: Option<Problem>,
    pub last_reconcile: Option<ReconcileRun>,
    /// Seconds between resyncs, and between polls of a git source.
    pub resync_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<f64>,
    pub resources: Vec<ResourceView>,
    /// Deletes the last reconcile withheld (an emptied repository, say): objects kept
    /// running although the revision does not declare them, why, and how to let them go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_withheld: Option<PruneWithheld>,
    /// How the controller learns of changes to each kind (`daemon/watches.rs`): kind →
    /// "watched: …", "polled every …", "not watched: …".
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub watching: BTreeMap<String, String>,
    /// The container watch's latest word per container, kept across snapshots.
    #[serde(skip)]
    pub live: BTreeMap<ResourceId, String>,
}

impl ControllerStatus {
    /// Replaces the live notes, and shows them on the resources.
    pub fn set_live(&mut self, live: BTreeMap<ResourceId, String>) {
        self.live = live;
        for resource in &mut self.resources {
            resource.live = Name::parse(&resource.name)
                .ok()
                .and_then(|name| self.live.get(&ResourceId::new(resource.kind, name)))
                .cloned();
        }
    }

    /// The status of a controller that has not reconciled yet.
    pub fn starting(
        source: String,
        reference: Option<String>,
        host: String,
        resync: std::time::Duration,
        poll: Option<std::time::Duration>,
    ) -> ControllerStatus {
        ControllerStatus {
            source,
            reference,
            host,
            pid: std::process::id(),
            started_unix: crate::state::now_unix(),
            reconciling: false,
            applied: None,
            rejected: None,
            source_error: None,
            last_reconcile: None,
            resync_seconds: resync.as_secs_f64(),
            poll_seconds: poll.map(|p| p.as_secs_f64()),
            resources: Vec::new(),
            prune_withheld: None,
            watching: BTreeMap::new(),
            live: BTreeMap::new(),
        }
    }
}

/// A revision that was rejected whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// The commit, for a git source; absent for a directory (it has no id until valid).
    pub revision: Option<String>,
    pub unix: u64,
    /// Every error, `file:line:col: field: message` for a manifest error.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub unix: u64,
    pub message: String,
}

/// One reconcile, as it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileRun {
    pub reasons: Reasons,
    pub started_unix: u64,
    pub seconds: f64,
    /// The revision applied, if one was.
    pub revision: Option<String>,
    pub converged: bool,
    /// Changes carried out.
    pub changed: usize,
    /// Changes that failed or were blocked.
    pub failed: usize,
    /// Changes held back for their retry.
    pub deferred: usize,
    /// Why nothing was applied, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One managed resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    pub kind: crate::model::Kind,
    pub name: String,
    pub state: ResourceState,
    pub message: Option<String>,
    pub revision: String,
    pub updated_unix: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryView>,
    /// How it is doing now, when gitvisor watches it between reconciles (containers:
    /// `running (pid 42), 1 restart, healthy`, or why a dead one stays down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}
