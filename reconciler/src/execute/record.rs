//! Store bookkeeping around an execution: write-ahead intents before (one transaction),
//! and after it outcomes, statuses, the revision and events, all in one transaction
//! ([`Store::record_apply`]), so an interrupted apply never leaves them half-recorded.
//!
//! The `_async` variants do the same on a blocking thread, for callers inside async code.

use std::collections::BTreeSet;

use crate::execute::{Report, ResultKind};
use crate::model::{Kind, ResourceId};
use crate::plan::{Action, Plan};
use crate::state::{
    ApplyRecord, Event, EventLevel, Outcome, ResourceState, ResourceStatus, RevisionRecord, Store,
    StoreError, now_unix,
};

/// Records, before anything runs, every object the plan is about to create.
pub fn record_intents(store: &Store, plan: &Plan) -> Result<(), StoreError> {
    store.record_intents(&intent_ids(plan), &plan.revision)
}

/// The objects `plan` creates (or re-creates).
fn intent_ids(plan: &Plan) -> Vec<ResourceId> {
    plan.changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace))
        .map(|c| c.id.clone())
        .collect()
}

/// Records what happened, in one transaction: ownership, per-resource status, the
/// revision and events.
///
/// The report covers every declared resource and every owned object found on the host, so
/// a store record or status it does not mention is stale: an owned object that vanished
/// from the host (deleted by hand) and is no longer declared. Those are dropped too, but
/// only for `observed_kinds`, the kinds whose driver looked at the host in this run.
pub fn record_report(
    store: &Store,
    report: &Report,
    observed_kinds: &[Kind],
    source: &str,
) -> Result<(), StoreError> {
    let now = now_unix();
    let reported: BTreeSet<&ResourceId> = report.results.iter().map(|r| &r.id).collect();
    let mut outcomes: Vec<Outcome> = store
        .owned()?
        .into_keys()
        .filter(|id| !reported.contains(id) && observed_kinds.contains(&id.kind))
        .map(|id| Outcome::Forgotten { id })
        .collect();
    let mut removed: Vec<ResourceId> = store
        .statuses()?
        .into_keys()
        .filter(|id| !reported.contains(id))
        .collect();
    let mut statuses = Vec::new();
    let mut events = Vec::new();
    for step in &report.results {
        let (state, message) = match &step.result {
            ResultKind::Applied | ResultKind::Unchanged => (ResourceState::Ready, None),
            ResultKind::Failed(why) if step.action == Action::Conflict => {
                (ResourceState::Conflict, Some(why.clone()))
            }
            ResultKind::Failed(why) => (ResourceState::Failed, Some(why.clone())),
            ResultKind::Blocked(dep) => (
                ResourceState::Blocked,
                Some(format!("dependency {dep} is not ready")),
            ),
        };
        let applied = matches!(step.result, ResultKind::Applied | ResultKind::Unchanged);
        match step.action {
            Action::Delete if applied => {
                outcomes.push(Outcome::Forgotten {
                    id: step.id.clone(),
                });
                removed.push(step.id.clone());
            }
            Action::Create | Action::Update | Action::Replace | Action::NoOp if applied => {
                outcomes.push(Outcome::Applied {
                    id: step.id.clone(),
                    spec_hash: step.spec_hash.clone().unwrap_or_default(),
                    revision: report.revision.clone(),
                });
            }
            _ => {}
        }
        if step.action != Action::Delete || !applied {
            statuses.push((
                step.id.clone(),
                ResourceStatus {
                    state,
                    message: message.clone(),
                    revision: report.revision.clone(),
                    updated_unix: now,
                },
            ));
        }
        if step.action.is_change() || !applied {
            let (level, text) = match &step.result {
                ResultKind::Applied => (EventLevel::Info, format!("{} applied", step.action)),
                ResultKind::Unchanged => continue,
                ResultKind::Failed(why) if !step.action.is_change() => {
                    (EventLevel::Error, format!("{}: {why}", step.action))
                }
                ResultKind::Failed(why) => {
                    (EventLevel::Error, format!("{} failed: {why}", step.action))
                }
                ResultKind::Blocked(dep) => (
                    EventLevel::Warning,
                    format!("{} blocked by {dep}", step.action),
                ),
            };
            events.push(Event {
                unix: now,
                resource: Some(step.id.clone()),
                level,
                message: text,
            });
        }
    }
    let failures = report.failures().count();
    let revision = RevisionRecord {
        id: report.revision.clone(),
        applied_unix: now,
        converged: report.converged(),
        summary: format!(
            "{} resource{}, {} changed, {} not converged",
            report.results.len(),
            if report.results.len() == 1 { "" } else { "s" },
            report
                .results
                .iter()
                .filter(|r| r.action.is_change() && r.ok())
                .count(),
            failures
        ),
        source: source.to_owned(),
    };
    store.record_apply(&ApplyRecord {
        outcomes,
        statuses,
        removed_statuses: removed,
        revision,
        events,
    })
}

/// [`record_intents`] on a blocking thread.
pub async fn record_intents_async(store: &Store, plan: &Plan) -> Result<(), StoreError> {
    let ids = intent_ids(plan);
    if ids.is_empty() {
        return Ok(());
    }
    let revision = plan.revision.clone();
    store
        .run_blocking("record intents", move |store| {
            store.record_intents(&ids, &revision)
        })
        .await
}

/// [`record_report`] on a blocking thread.
pub async fn record_report_async(
    store: &Store,
    report: &Report,
    observed_kinds: &[Kind],
    source: &str,
) -> Result<(), StoreError> {
    let report = report.clone();
    let observed_kinds = observed_kinds.to_vec();
    let source = source.to_owned();
    store
        .run_blocking("record apply", move |store| {
            record_report(store, &report, &observed_kinds, &source)
        })
        .await
}
