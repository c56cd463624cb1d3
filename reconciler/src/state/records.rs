//! The values the state store keeps. Plain serde data (camelCase JSON), so that
//! `gitvisor status --output json` can print them as they are stored.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::ResourceId;

/// What the store knows about an object gitvisor created (or is about to create).
///
/// Keyed by [`ResourceId`] in the store. Its presence is what lets a driver delete or
/// change the object; the object's actual state is always read from the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedRecord {
    /// Hash of the spec last applied successfully; empty while a first create is pending.
    #[serde(default)]
    pub spec_hash: String,
    /// The revision that last touched the record (the intent's, while pending).
    pub revision: String,
    /// When the record was last written, in seconds since the Unix epoch.
    pub updated_unix: u64,
    /// A write-ahead intent was recorded and no outcome has confirmed it yet: the object
    /// may or may not exist, but if it exists it is ours, and `spec_hash` (the last
    /// confirmed one, if any) may not describe it.
    #[serde(default)]
    pub pending: bool,
    /// What the object depended on in the graph of the revision that last applied it (or
    /// is about to create it): deletes run in reverse of these edges, a dependent before
    /// what it depends on, since a pruned object has no node in the new graph. `None` in
    /// records written before gitvisor recorded dependencies (older stores stay readable;
    /// the next apply that confirms the object fills it in), and older gitvisors ignore
    /// it, so the store's schema version is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<ResourceId>>,
}

/// An object about to be created, with what it depends on (see
/// [`super::Store::record_intents`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: ResourceId,
    /// Its dependencies in the revision's graph; `None`: not known.
    pub depends_on: Option<Vec<ResourceId>>,
}

impl From<ResourceId> for Intent {
    /// An intent whose dependencies are not known.
    fn from(id: ResourceId) -> Self {
        Intent {
            id,
            depends_on: None,
        }
    }
}

/// The result of acting on one resource, recorded by [`super::Store::record_outcomes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The object exists with this spec: upsert its owned record, no longer pending.
    Applied {
        id: ResourceId,
        spec_hash: String,
        revision: String,
        /// Its dependencies in the graph of `revision`.
        depends_on: Vec<ResourceId>,
    },
    /// The object is no longer ours (deleted, or a `Retain` volume pruned from management):
    /// remove its owned record.
    Forgotten { id: ResourceId },
}

impl Outcome {
    pub fn id(&self) -> &ResourceId {
        match self {
            Outcome::Applied { id, .. } | Outcome::Forgotten { id } => id,
        }
    }
}

/// Everything one apply records after it ran, written in one transaction by
/// [`super::Store::record_apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRecord {
    /// Ownership changes, applied in order.
    pub outcomes: Vec<Outcome>,
    /// Statuses to set (replace).
    pub statuses: Vec<(ResourceId, ResourceStatus)>,
    /// Resources whose status is dropped (deleted, or no longer declared).
    pub removed_statuses: Vec<ResourceId>,
    /// The revision, appended to the history.
    pub revision: RevisionRecord,
    /// Events, appended to the log in order.
    pub events: Vec<Event>,
}

/// Where a resource stands after the last reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceState {
    /// Exists and matches the declared spec.
    Ready,
    /// Being created or changed, or waiting for something to settle.
    Progressing,
    /// The last action on it failed.
    Failed,
    /// Not acted on because something it depends on is not ready.
    Blocked,
    /// An object with the declared name exists and is not ours.
    Conflict,
}

impl ResourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Ready => "Ready",
            ResourceState::Progressing => "Progressing",
            ResourceState::Failed => "Failed",
            ResourceState::Blocked => "Blocked",
            ResourceState::Conflict => "Conflict",
        }
    }
}

impl fmt::Display for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last reported status of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub state: ResourceState,
    /// A human-readable reason, e.g. the error of a failed action.
    #[serde(default)]
    pub message: Option<String>,
    /// The revision this status was computed against.
    pub revision: String,
    /// Seconds since the Unix epoch.
    pub updated_unix: u64,
}

/// One applied revision, kept in a bounded history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// The revision identifier (a commit id, or a content hash for a directory source).
    pub id: String,
    /// Seconds since the Unix epoch.
    pub applied_unix: u64,
    /// Whether every resource was Ready at the end of the reconcile.
    pub converged: bool,
    /// One line: what was done, e.g. "2 created, 1 updated, 0 deleted".
    pub summary: String,
    /// Where the revision came from: the canonical manifest paths (joined with `\n`, in
    /// argument order) or a git URL. An apply from another source prunes nothing unless
    /// `--prune` confirms it. Empty in records written before this field existed.
    #[serde(default)]
    pub source: String,
}

/// Severity of an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventLevel {
    Info,
    Warning,
    Error,
}

impl EventLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Info => "Info",
            EventLevel::Warning => "Warning",
            EventLevel::Error => "Error",
        }
    }
}

impl fmt::Display for EventLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the bounded event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub unix: u64,
    /// The resource the event is about; `None` for the reconciler as a whole.
    #[serde(default)]
    pub resource: Option<ResourceId>,
    pub level: EventLevel,
    pub message: String,
}

/// Seconds since the Unix epoch; 0 if the clock is set before 1970.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
