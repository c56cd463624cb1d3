//! Store bookkeeping around an execution: write-ahead intents before (one transaction),
//! and after it outcomes, statuses, the revision and events, all in one transaction
//! ([`Store::record_apply`]), so an interrupted apply never leaves them half-recorded.
//!
//! The `_async` variants do the same on a blocking thread, for callers inside async code.

use std::collections::BTreeSet;

use crate::contract::Action;
use crate::execute::{Report, ResultKind};
use crate::graph::DependencyGraph;
use crate::model::{Kind, ResourceId};
use crate::plan::Plan;
use crate::state::{
    ApplyRecord, Event, EventLevel, Intent, Outcome, ResourceState, ResourceStatus, RevisionRecord,
    Store, StoreError, now_unix,
};

/// Records, before anything runs, every object the plan is about to create, with what it
/// depends on in `graph` (the revision's).
pub fn record_intents(
    store: &Store,
    plan: &Plan,
    graph: &DependencyGraph,
) -> Result<(), StoreError> {
    store.record_intents(&intents(plan, graph), &plan.revision)
}

/// The objects `plan` creates (or re-creates).
fn intents(plan: &Plan, graph: &DependencyGraph) -> Vec<Intent> {
    plan.changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace))
        .map(|c| Intent {
            id: c.id.clone(),
            depends_on: Some(dependencies(graph, &c.id)),
        })
        .collect()
}

/// What `id` depends on in `graph`, each once: what its owned record keeps, so that a
/// later revision that prunes it deletes its dependents first.
fn dependencies(graph: &DependencyGraph, id: &ResourceId) -> Vec<ResourceId> {
    let mut ids = graph.dependencies(id);
    ids.dedup();
    ids
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
    graph: &DependencyGraph,
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
        let state = match &step.result {
            // Left out on purpose: its record, status and events stay as they were.
            ResultKind::Skipped(_) => continue,
            ResultKind::Applied | ResultKind::Unchanged => ResourceState::Ready,
            ResultKind::Failed(_) if step.action == Action::Conflict => ResourceState::Conflict,
            ResultKind::Failed(_) => ResourceState::Failed,
            ResultKind::Blocked(_) => ResourceState::Blocked,
            ResultKind::Cancelled => ResourceState::Progressing,
        };
        let message = step.problem();
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
                    depends_on: dependencies(graph, &step.id),
                });
            }
            _ => {}
        }
        if step.action != Action::Delete || !applied {
            statuses.push((
                step.id.clone(),
                ResourceStatus {
                    state,
                    message,
                    revision: report.revision.clone(),
                    updated_unix: now,
                },
            ));
        }
        if step.action.is_change() || !applied {
            let (level, text) = match (&step.result, step.failure()) {
                (ResultKind::Applied, _) => (EventLevel::Info, format!("{} applied", step.action)),
                (ResultKind::Failed(_), Some(failure)) => (EventLevel::Error, failure),
                (ResultKind::Blocked(_) | ResultKind::Cancelled, Some(failure)) => {
                    (EventLevel::Warning, failure)
                }
                _ => continue,
            };
            events.push(Event {
                unix: now,
                resource: Some(step.id.clone()),
                level,
                message: text,
            });
        }
    }
    for restart in &report.restarts {
        if restart.result == ResultKind::Applied {
            let causes: Vec<String> = restart.because.iter().map(ToString::to_string).collect();
            events.push(Event {
                unix: now,
                resource: Some(restart.id.clone()),
                level: EventLevel::Info,
                message: format!(
                    "stopped while {} changed, then started again",
                    causes.join(", ")
                ),
            });
        }
    }
    let failures = report.failures().count() + report.results.iter().filter(|r| r.deferred).count();
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
pub async fn record_intents_async(
    store: &Store,
    plan: &Plan,
    graph: &DependencyGraph,
) -> Result<(), StoreError> {
    let intents = intents(plan, graph);
    if intents.is_empty() {
        return Ok(());
    }
    let revision = plan.revision.clone();
    store
        .run_blocking("record intents", move |store| {
            store.record_intents(&intents, &revision)
        })
        .await
}

/// [`record_report`] on a blocking thread.
pub async fn record_report_async(
    store: &Store,
    report: &Report,
    graph: &DependencyGraph,
    observed_kinds: &[Kind],
    source: &str,
) -> Result<(), StoreError> {
    let report = report.clone();
    let graph = graph.clone();
    let observed_kinds = observed_kinds.to_vec();
    let source = source.to_owned();
    store
        .run_blocking("record apply", move |store| {
            record_report(store, &report, &graph, &observed_kinds, &source)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::StepResult;

    const GRAPH: fn() -> DependencyGraph = DependencyGraph::default;

    fn id(text: &str) -> ResourceId {
        text.parse().expect("valid resource id")
    }

    fn step(name: &str, action: Action, result: ResultKind) -> StepResult {
        StepResult {
            id: id(name),
            action,
            deferred: matches!(
                result,
                ResultKind::Skipped(crate::plan::SkipReason::Deferred { .. })
            ),
            result,
            seconds: 0.0,
            spec_hash: Some(format!("hash-{name}")),
            class: None,
        }
    }

    /// A store after revision r1: br0, br1 and br9 owned and Ready.
    fn store_after_r1(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).expect("open");
        let ids = [id("Bridge/br0"), id("Bridge/br1"), id("Bridge/br9")];
        store
            .record_intents(&ids.clone().map(Intent::from), "r1")
            .expect("intents");
        store
            .record_apply(&ApplyRecord {
                outcomes: ids
                    .iter()
                    .map(|id| Outcome::Applied {
                        id: id.clone(),
                        spec_hash: "h1".into(),
                        revision: "r1".into(),
                        depends_on: Vec::new(),
                    })
                    .collect(),
                statuses: ids
                    .iter()
                    .map(|id| {
                        (
                            id.clone(),
                            ResourceStatus {
                                state: ResourceState::Ready,
                                message: None,
                                revision: "r1".into(),
                                updated_unix: 1,
                            },
                        )
                    })
                    .collect(),
                removed_statuses: Vec::new(),
                revision: RevisionRecord {
                    id: "r1".into(),
                    applied_unix: 1,
                    converged: true,
                    summary: String::new(),
                    source: "/m".into(),
                },
                events: Vec::new(),
            })
            .expect("record r1");
        store
    }

    /// br0 updated, br1 deleted, br2 failed to create, br9 vanished from the host and
    /// is no longer declared (not in the report).
    fn report_r2() -> Report {
        Report {
            revision: "r2".into(),
            restarts: Vec::new(),
            results: vec![
                step("Bridge/br0", Action::Update, ResultKind::Applied),
                step("Bridge/br1", Action::Delete, ResultKind::Applied),
                step(
                    "Bridge/br2",
                    Action::Create,
                    ResultKind::Failed(crate::execute::Failure::new(
                        crate::contract::FailureClass::NeedsUser,
                        "refused",
                    )),
                ),
            ],
            seconds: 0.1,
        }
    }

    fn assert_r2_recorded(store: &Store) {
        let owned = store.owned().expect("owned");
        assert_eq!(
            owned.keys().cloned().collect::<Vec<_>>(),
            vec![id("Bridge/br0")]
        );
        assert_eq!(owned[&id("Bridge/br0")].spec_hash, "hash-Bridge/br0");
        assert!(!owned[&id("Bridge/br0")].pending);
        let statuses = store.statuses().expect("statuses");
        assert_eq!(
            statuses.keys().cloned().collect::<Vec<_>>(),
            vec![id("Bridge/br0"), id("Bridge/br2")]
        );
        assert_eq!(statuses[&id("Bridge/br2")].state, ResourceState::Failed);
        let last = store.last_revision().expect("last").expect("a revision");
        assert_eq!(last.id, "r2");
        assert_eq!(last.source, "/m");
        assert!(!last.converged);
        assert_eq!(last.summary, "3 resources, 2 changed, 1 not converged");
        let events = store.events(10).expect("events");
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].level, EventLevel::Error);
    }

    #[test]
    fn a_revision_with_a_change_held_back_is_not_converged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_after_r1(dir.path());
        let held = step(
            "Bridge/br1",
            Action::Update,
            ResultKind::Skipped(crate::plan::SkipReason::Deferred {
                why: "retrying in 4 s".into(),
            }),
        );
        assert!(held.deferred, "a deferred skip is deferred");
        let report = Report {
            revision: "r2".into(),
            results: vec![
                step("Bridge/br0", Action::NoOp, ResultKind::Unchanged),
                held,
            ],
            restarts: Vec::new(),
            seconds: 0.1,
        };
        assert!(!report.converged());
        record_report(&store, &report, &GRAPH(), &[Kind::Bridge], "/m").expect("record");
        let last = store.last_revision().expect("last").expect("a revision");
        assert!(!last.converged);
        assert_eq!(last.summary, "2 resources, 0 changed, 1 not converged");
    }

    #[test]
    fn a_report_is_recorded_whole_in_one_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_after_r1(dir.path());
        let path = store.path().to_path_buf();
        let before = std::fs::read(&path).expect("image");
        record_report(&store, &report_r2(), &GRAPH(), &[Kind::Bridge], "/m").expect("record");
        assert_r2_recorded(&store);

        // The file just before the call holds none of r2 (a crash then loses all of it,
        // never a part).
        let crashed = tempfile::tempdir().expect("tempdir");
        std::fs::write(crashed.path().join(crate::state::STATE_FILE), &before).expect("write");
        let view = crate::state::ReadOnlyStore::open(crashed.path()).expect("view");
        assert_eq!(view.last_revision().expect("last").expect("rev").id, "r1");
        assert_eq!(view.owned().expect("owned").len(), 3);
    }

    #[test]
    fn unobserved_kinds_keep_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_after_r1(dir.path());
        record_report(&store, &report_r2(), &GRAPH(), &[], "/m").expect("record");
        // br9 is not in the report, but no driver looked at Bridges: it stays owned.
        assert!(
            store
                .owned()
                .expect("owned")
                .contains_key(&id("Bridge/br9"))
        );
    }

    #[test]
    fn statuses_and_events_word_a_failure_as_the_step_result_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_after_r1(dir.path());
        let report = Report {
            revision: "r2".into(),
            restarts: Vec::new(),
            results: vec![
                step(
                    "Bridge/br0",
                    Action::Update,
                    ResultKind::Failed(crate::execute::Failure::new(
                        crate::contract::FailureClass::NeedsUser,
                        "refused",
                    )),
                ),
                step(
                    "Bridge/br1",
                    Action::Create,
                    ResultKind::Blocked(id("Bridge/br0")),
                ),
                step("Bridge/br2", Action::Create, ResultKind::Cancelled),
                step(
                    "Bridge/br3",
                    Action::Conflict,
                    ResultKind::Failed(crate::execute::Failure::new(
                        crate::contract::FailureClass::NeedsUser,
                        "not ours",
                    )),
                ),
            ],
            seconds: 0.1,
        };
        record_report(&store, &report, &GRAPH(), &[Kind::Bridge], "/m").expect("record");
        let statuses = store.statuses().expect("statuses");
        let events = store.events(10).expect("events");
        for result in &report.results {
            assert_eq!(
                statuses[&result.id].message,
                result.problem(),
                "status of {}",
                result.id
            );
            let event = events
                .iter()
                .find(|e| e.resource.as_ref() == Some(&result.id))
                .expect("an event");
            assert_eq!(Some(&event.message), result.failure().as_ref());
        }
        assert_eq!(
            statuses[&id("Bridge/br1")].message.as_deref(),
            Some("dependency Bridge/br0 is not ready")
        );
        assert_eq!(statuses[&id("Bridge/br1")].state, ResourceState::Blocked);
    }

    #[tokio::test]
    async fn the_async_variants_record_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_after_r1(dir.path());
        record_report_async(&store, &report_r2(), &GRAPH(), &[Kind::Bridge], "/m")
            .await
            .expect("record");
        assert_r2_recorded(&store);
    }
}
