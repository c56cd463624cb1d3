//! Store bookkeeping around an execution: write-ahead intents before, outcomes, statuses,
//! the revision and events after — one transaction each.

use std::collections::BTreeSet;

use crate::contract::Action;
use crate::execute::{Report, ResultKind};
use crate::model::{Kind, ResourceId};
use crate::plan::Plan;
use crate::state::{
    Event, EventLevel, Outcome, ResourceState, ResourceStatus, RevisionRecord, Store, StoreError,
    now_unix,
};

/// Records, before anything runs, every object the plan is about to create.
pub fn record_intents(store: &Store, plan: &Plan) -> Result<(), StoreError> {
    let ids: Vec<ResourceId> = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace))
        .map(|c| c.id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    store.record_intents(&ids, &plan.revision)
}

/// Records what happened: ownership, per-resource status, the revision and events.
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
            // Left out on purpose: its record, status and events stay as they were.
            ResultKind::Skipped(_) => continue,
            ResultKind::Applied | ResultKind::Unchanged => (ResourceState::Ready, None),
            ResultKind::Failed(why) if step.action == Action::Conflict => {
                (ResourceState::Conflict, Some(why.clone()))
            }
            ResultKind::Failed(why) => (ResourceState::Failed, Some(why.clone())),
            ResultKind::Blocked(dep) => (
                ResourceState::Blocked,
                Some(format!("dependency {dep} is not ready")),
            ),
            ResultKind::Cancelled => (
                ResourceState::Progressing,
                Some("cancelled before it finished; the next run carries on".to_owned()),
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
                ResultKind::Unchanged | ResultKind::Skipped(_) => continue,
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
                ResultKind::Cancelled => {
                    (EventLevel::Warning, format!("{} cancelled", step.action))
                }
            };
            events.push(Event {
                unix: now,
                resource: Some(step.id.clone()),
                level,
                message: text,
            });
        }
    }
    store.record_outcomes(&outcomes)?;
    store.set_statuses(&statuses)?;
    store.remove_statuses(&removed)?;
    let failures = report.failures().count();
    store.record_revision(&RevisionRecord {
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
    })?;
    store.append_events(&events)
}
