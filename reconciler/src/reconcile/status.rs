//! `status`: the store's view of the last apply, and what the host has now.
//!
//! The store keeps ownership, spec hashes and statuses, not the declared specs, so to
//! show drift field by field the last applied revision is loaded again from the source
//! the store recorded (its manifest paths). Steps, in order:
//! 1. Read the store (read-only: status never writes it).
//! 2. Load the last revision's source. When it still loads to the same revision id, plan
//!    it against the host (one batch per driver, as `plan` does): every resource is in
//!    sync, drifted (with the fields, declared → on the host), missing, not ours, or no
//!    longer declared.
//! 3. Otherwise (the manifests changed or moved, or the source is not a path) observe only
//!    what gitvisor owns, with an empty desired state: each owned object is present or
//!    absent, and the report says why no field drift is shown.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{ReconcileError, Reconciler, Source};
use crate::drivers::PlanContext;
use crate::graph::DependencyGraph;
use crate::load::Revision;
use crate::model::ResourceId;
use crate::plan::{Action, Change, FieldChange};
use crate::state::{Event, ReadOnlyStore, ResourceStatus, RevisionRecord};

/// How many of the newest events `status` shows.
pub const RECENT_EVENTS: usize = 10;

/// What the host was compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The last applied revision, loaded again from its source: drift is per field.
    LastRevision { revision: String },
    /// Only ownership: whether each owned object is on the host, and why no more.
    Presence { why: String },
}

/// One resource on the host, now.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// As declared.
    InSync,
    /// Present and ours, but different: fields with `old` on the host, `new` declared.
    Drifted {
        fields: Vec<FieldChange>,
        reason: Option<String>,
    },
    /// Declared, not on the host.
    Missing,
    /// An object with the name exists without gitvisor's marker.
    NotOurs { reason: String },
    /// This build cannot observe the kind.
    Unsupported,
    /// Ours, on the host, not declared by the last revision (a delete left out).
    Undeclared,
    /// Presence basis: the owned object is on the host.
    Present,
    /// Presence basis: the owned object is not on the host (or lost its marker).
    Absent,
}

impl Live {
    fn from_change(change: &Change) -> Live {
        match change.action {
            Action::NoOp => Live::InSync,
            Action::Update | Action::Replace => Live::Drifted {
                fields: change.fields.clone(),
                reason: change.reason(),
            },
            Action::Create => Live::Missing,
            Action::Conflict => Live::NotOurs {
                reason: change.reason().unwrap_or_default(),
            },
            Action::Unsupported => Live::Unsupported,
            Action::Delete => Live::Undeclared,
        }
    }

    /// A stable word for JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Live::InSync => "inSync",
            Live::Drifted { .. } => "drifted",
            Live::Missing => "missing",
            Live::NotOurs { .. } => "conflict",
            Live::Unsupported => "unsupported",
            Live::Undeclared => "undeclared",
            Live::Present => "present",
            Live::Absent => "absent",
        }
    }

    /// Whether the host differs from what the store says was applied.
    pub fn is_drift(&self) -> bool {
        matches!(
            self,
            Live::Drifted { .. } | Live::Missing | Live::NotOurs { .. } | Live::Absent
        )
    }

    /// One line for people, e.g. `Drifted: mtu 1400 → 1280 on the host`.
    pub fn describe(&self) -> String {
        match self {
            Live::InSync => "In sync".into(),
            Live::Drifted { fields, reason } if fields.is_empty() => {
                format!("Drifted: {}", reason.as_deref().unwrap_or("differs"))
            }
            Live::Drifted { fields, .. } => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{} {} → {}", f.path, show(&f.new), show(&f.old)))
                    .collect();
                format!("Drifted: {} on the host", fields.join(", "))
            }
            Live::Missing => "Missing: not on the host".into(),
            Live::NotOurs { reason } => format!("Conflict: {reason}"),
            Live::Unsupported => "Not observed: this build has no driver for the kind".into(),
            Live::Undeclared => "Not declared: kept on the host (not pruned)".into(),
            Live::Present => "Present".into(),
            Live::Absent => "Absent: not on the host with gitvisor's marker".into(),
        }
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The host, observed now.
#[derive(Debug, Clone)]
pub struct HostView {
    pub basis: Basis,
    pub resources: BTreeMap<ResourceId, Live>,
    /// What a driver says about an object that needs no change (a container's restarts,
    /// last exit code and health), by resource.
    pub notes: BTreeMap<ResourceId, String>,
}

/// Everything `status` shows.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// Why the store file is shown as empty: it is damaged (see
    /// [`ReadOnlyStore::damage`]); the next apply moves it aside. `None` when it was read
    /// or does not exist.
    pub damage: Option<String>,
    pub last: Option<RevisionRecord>,
    pub statuses: BTreeMap<ResourceId, ResourceStatus>,
    pub events: Vec<Event>,
    /// `None` with `--offline`.
    pub host: Option<HostView>,
}

impl Reconciler {
    /// The store's view and, unless `offline`, the host's. Never writes the store.
    pub async fn status(&self, offline: bool) -> Result<StatusReport, ReconcileError> {
        let store = ReadOnlyStore::open_async(&self.options.state_dir).await?;
        let damage = store.damage().map(str::to_owned);
        let (last, statuses, events, owned) = store
            .run_blocking("read status", |store| {
                Ok((
                    store.last_revision()?,
                    store.statuses()?,
                    store.events(RECENT_EVENTS)?,
                    store.owned()?,
                ))
            })
            .await?;
        let host = if offline {
            None
        } else {
            let context = PlanContext::new(owned.into_keys());
            Some(self.observe(last.as_ref(), &context).await?)
        };
        Ok(StatusReport {
            damage,
            last,
            statuses,
            events,
            host,
        })
    }

    async fn observe(
        &self,
        last: Option<&RevisionRecord>,
        context: &PlanContext,
    ) -> Result<HostView, ReconcileError> {
        let revision = match last {
            None => Err("no revision has been applied yet".to_owned()),
            Some(last) => self.reload(last).await,
        };
        match revision {
            Ok(revision) => {
                let plan = self.make_plan(&revision, context).await?;
                Ok(HostView {
                    basis: Basis::LastRevision {
                        revision: revision.id.clone(),
                    },
                    resources: plan
                        .changes
                        .iter()
                        .map(|c| (c.id.clone(), Live::from_change(c)))
                        .collect(),
                    notes: plan
                        .changes
                        .iter()
                        .filter(|c| c.action == Action::NoOp)
                        .filter_map(|c| Some((c.id.clone(), c.reason()?)))
                        .collect(),
                })
            }
            Err(why) => {
                let empty = Revision {
                    id: String::new(),
                    resources: Vec::new(),
                    graph: DependencyGraph::default(),
                    prune_policy: None,
                };
                let plan = self.make_plan(&empty, context).await?;
                let present: BTreeMap<&ResourceId, &Change> =
                    plan.changes.iter().map(|c| (&c.id, c)).collect();
                let resources = context
                    .owned
                    .iter()
                    .map(|id| {
                        let live = match present.get(id) {
                            Some(c) if c.action == Action::Unsupported => Live::Unsupported,
                            Some(_) => Live::Present,
                            None if self.drivers.get(id.kind).is_none() => Live::Unsupported,
                            None => Live::Absent,
                        };
                        (id.clone(), live)
                    })
                    .collect();
                Ok(HostView {
                    basis: Basis::Presence { why },
                    resources,
                    notes: BTreeMap::new(),
                })
            }
        }
    }

    /// The last applied revision, loaded again from its recorded source (reading files:
    /// on a blocking thread), if it still loads to the same revision; otherwise why not.
    async fn reload(&self, last: &RevisionRecord) -> Result<Arc<Revision>, String> {
        let Some(source) = Source::from_recorded(&last.source) else {
            return Err(if last.source.is_empty() {
                "the store does not record where the last revision came from".to_owned()
            } else {
                format!(
                    "the last revision came from {}, which status cannot read",
                    last.source
                )
            });
        };
        let shown = source.id().replace('\n', " ");
        let host = self.options.host.clone();
        let reading = source.clone();
        let loaded = tokio::task::spawn_blocking(move || super::load(&reading, &host))
            .await
            .map_err(|err| format!("reading the manifests at {shown} did not finish: {err}"))?;
        match loaded {
            Ok(revision) if revision.id == last.id => Ok(Arc::new(revision)),
            Ok(revision) => Err(format!(
                "the manifests at {shown} changed since revision {} was applied (they are now {}); \
                 `gitvisor plan {shown}` compares the host with them",
                last.id, revision.id
            )),
            Err(errors) => Err(format!(
                "the manifests at {shown} no longer load ({} error{})",
                errors.diagnostics.len(),
                if errors.diagnostics.len() == 1 {
                    ""
                } else {
                    "s"
                }
            )),
        }
    }
}
