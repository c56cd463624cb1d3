//! Execute: carry out a plan.
//!
//! Steps, in order:
//! 1. Write-ahead: record in the store every object about to be created (one
//!    transaction), so a crash between "created" and "marked as ours" is still repaired
//!    as ours by the next run.
//! 2. Creates, updates and replaces run in dependency order: each waits for the resources
//!    it depends on; independent ones run in parallel, bounded by a semaphore. A failure
//!    blocks its dependents only; the rest proceeds.
//! 3. Deletes run after that, one kind at a time, dependents' kinds first.
//! 4. Outcomes, statuses, the revision and events are recorded in one transaction.
//!
//! Every driver step is idempotent, so a crash at any point is repaired by the next run.

mod outcome;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use outcome::{Report, ResultKind, StepResult};
pub use record::{record_intents, record_intents_async, record_report, record_report_async};

use crate::drivers::Drivers;
use crate::graph::DependencyGraph;
use crate::model::{Kind, ResourceId};
use crate::plan::{Action, Change, Plan};

/// Default bound on concurrent driver calls.
pub const DEFAULT_CONCURRENCY: usize = 16;

type Done = Shared<BoxFuture<'static, bool>>;

/// Runs every change of `plan` that touches the host and reports each resource's result.
/// Store bookkeeping is left to the caller ([`record_intents`], [`record_report`]).
pub async fn execute(
    plan: &Plan,
    graph: &DependencyGraph,
    drivers: Arc<Drivers>,
    concurrency: usize,
) -> Report {
    let started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut results: Vec<StepResult> = Vec::new();

    // Resources that cannot be relied on by dependents, with why.
    let mut unusable: BTreeMap<ResourceId, String> = BTreeMap::new();
    for change in &plan.changes {
        match change.action {
            Action::Conflict | Action::Unsupported => {
                let why = change
                    .reason
                    .clone()
                    .unwrap_or_else(|| change.action.to_string());
                unusable.insert(change.id.clone(), why.clone());
                results.push(StepResult::new(change, ResultKind::Failed(why), 0.0));
            }
            Action::NoOp => results.push(StepResult::new(change, ResultKind::Unchanged, 0.0)),
            _ => {}
        }
    }

    // Phase 1: creates, updates, replaces, in dependency order.
    let mut done: BTreeMap<ResourceId, Done> = BTreeMap::new();
    let mut tasks = Vec::new();
    for change in plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Update | Action::Replace))
    {
        let dependencies: Vec<(ResourceId, Option<Done>)> = graph
            .dependencies(&change.id)
            .into_iter()
            .map(|dep| {
                let signal = done.get(&dep).cloned();
                (dep, signal)
            })
            .collect();
        let blocked_by: Vec<(ResourceId, String)> = dependencies
            .iter()
            .filter_map(|(dep, _)| unusable.get(dep).map(|why| (dep.clone(), why.clone())))
            .collect();
        let change = change.clone();
        let drivers = drivers.clone();
        let semaphore = semaphore.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel::<bool>();
        let signal: Done = receiver.map(|r| r.unwrap_or(false)).boxed().shared();
        done.insert(change.id.clone(), signal);
        let span = tracing::info_span!("resource", id = %change.id, action = %change.action);
        tasks.push(tokio::spawn(
            async move {
                let started = Instant::now();
                if let Some((dep, _)) = blocked_by.first() {
                    let _ = sender.send(false);
                    return StepResult::new(&change, ResultKind::Blocked(dep.clone()), 0.0);
                }
                for (dep, signal) in dependencies {
                    if let Some(signal) = signal {
                        if !signal.await {
                            let _ = sender.send(false);
                            return StepResult::new(&change, ResultKind::Blocked(dep), 0.0);
                        }
                    }
                }
                let result = run_change(&change, &drivers, &semaphore).await;
                let _ = sender.send(matches!(result, ResultKind::Applied));
                StepResult::new(&change, result, started.elapsed().as_secs_f64())
            }
            .instrument(span),
        ));
    }
    collect(tasks, &mut results).await;

    // Phase 2: deletes, dependents' kinds first; parallel within a kind.
    for kind in Kind::ALL.iter().rev() {
        let mut tasks = Vec::new();
        for change in plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Delete && c.id.kind == *kind)
        {
            let change = change.clone();
            let drivers = drivers.clone();
            let semaphore = semaphore.clone();
            let span = tracing::info_span!("resource", id = %change.id, action = "delete");
            tasks.push(tokio::spawn(
                async move {
                    let started = Instant::now();
                    let result = run_change(&change, &drivers, &semaphore).await;
                    StepResult::new(&change, result, started.elapsed().as_secs_f64())
                }
                .instrument(span),
            ));
        }
        collect(tasks, &mut results).await;
    }

    Report {
        revision: plan.revision.clone(),
        results,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Waits for every task, in order, and keeps their results.
async fn collect(tasks: Vec<tokio::task::JoinHandle<StepResult>>, results: &mut Vec<StepResult>) {
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(err) => tracing::error!("executor task failed: {err}"),
        }
    }
}

async fn run_change(change: &Change, drivers: &Drivers, semaphore: &Semaphore) -> ResultKind {
    let Some(driver) = drivers.get(change.id.kind) else {
        return ResultKind::Failed(format!("no driver for kind {}", change.id.kind));
    };
    let Ok(_permit) = semaphore.acquire().await else {
        return ResultKind::Failed("executor shut down".into());
    };
    match driver.apply(change).await {
        Ok(()) => {
            tracing::info!("applied");
            ResultKind::Applied
        }
        Err(err) => {
            tracing::info!(error = %err, "failed");
            ResultKind::Failed(err.to_string())
        }
    }
}
