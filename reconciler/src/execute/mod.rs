//! Execute: carry out a plan.
//!
//! Steps, in order:
//! 1. Write-ahead: record in the store every object about to be created (one
//!    transaction), so a crash between "created" and "marked as ours" is still repaired
//!    as ours by the next run.
//! 2. Creates, updates and replaces run in dependency order: each waits for the resources
//!    it depends on; independent ones run in parallel, bounded by a semaphore. A failure
//!    blocks its dependents only; the rest proceeds.
//! 3. Deletes run after that, each after the deletes of its dependents in the last
//!    applied graph ([`Plan::delete_after`], from the store's records); independent
//!    ones in parallel. A delete that fails blocks the deletes of what it depends on.
//! 4. Outcomes, statuses, the revision and events are recorded in one transaction.
//!
//! Changes the plan left out on purpose ([`crate::plan::Plan::skipped`]) are reported as
//! [`ResultKind::Skipped`] without touching the host, so the bookkeeping keeps their
//! records. Each finished change is reported to the [`ExecuteOptions::events`] callback as
//! it finishes.
//!
//! Every driver step is idempotent, so a crash at any point is repaired by the next run.
//!
//! Each step gets a [`StepContext`]: the run's cancellation token, a deadline (the
//! driver's [`step_budget`](crate::contract::Driver::step_budget) from when the step
//! starts) and the run's driver progress channel. Once the run is cancelled no step starts;
//! running ones stop at their next safe point; all of them report
//! [`ResultKind::Cancelled`]. A step past its deadline is abandoned as hung and fails
//! as transient. A failure's whole cause chain is reported, with its class. A driver call
//! that panics is a failure of class `Bug` naming the resource (see `contract/panic.rs`): every
//! change the plan carries out has a result, so a panic never reads as converged.

mod options;
mod outcome;
mod progress;
mod record;
mod restart;
mod shutdown;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::contract::panic;
pub use options::ExecuteOptions;
pub use outcome::{Failure, Report, ResultKind, StepResult};
pub use progress::{Progress, RunEvent, silent};
pub use record::{record_intents, record_intents_async, record_report, record_report_async};
pub use restart::RestartResult;
pub use shutdown::cancel_on_shutdown_signals;

use crate::contract::{Action, Change, Drivers, FailureClass, Interrupted, StepContext, chain};
use crate::graph::DependencyGraph;
use crate::model::ResourceId;
use crate::plan::Plan;

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
    execute_with(plan, graph, drivers, ExecuteOptions::new(concurrency)).await
}

/// [`execute`], with a cancellation token, a driver progress channel and a callback told
/// about the run as it goes ([`ExecuteOptions`]).
pub async fn execute_with(
    plan: &Plan,
    graph: &DependencyGraph,
    drivers: Arc<Drivers>,
    options: ExecuteOptions,
) -> Report {
    let started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(
        options.concurrency.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let options = Arc::new(options);
    let events = options.events.clone();
    let mut results: Vec<StepResult> = plan
        .skipped
        .iter()
        .map(|skipped| {
            StepResult::new(
                &skipped.change,
                ResultKind::Skipped(skipped.reason.clone()),
                0.0,
            )
        })
        .collect();
    events(RunEvent::Started { plan });

    // Resources that cannot be relied on by dependents, with why.
    let mut unusable: BTreeMap<ResourceId, String> = BTreeMap::new();
    for change in &plan.changes {
        match change.action {
            Action::Conflict | Action::Unsupported => {
                let why = change.reason().unwrap_or_else(|| change.action.to_string());
                unusable.insert(change.id.clone(), why.clone());
                let class = if crate::plan::panicked_while_planning(change) {
                    FailureClass::Bug
                } else {
                    FailureClass::NeedsUser
                };
                results.push(StepResult::new(
                    change,
                    ResultKind::Failed(Failure::new(class, why)),
                    0.0,
                ));
            }
            Action::NoOp => results.push(StepResult::new(change, ResultKind::Unchanged, 0.0)),
            _ => {}
        }
    }

    prepare(plan, graph, &drivers, &unusable);

    // Phase 1: creates, updates, replaces, in dependency order; the running dependents of
    // a disruptive one are stopped before it and started again after.
    let holds = Arc::new(restart::Holds::new(plan));
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
        let options = options.clone();
        let events = events.clone();
        let holds = holds.clone();
        let (sender, signal) = done_signal();
        done.insert(change.id.clone(), signal);
        let span = tracing::info_span!("resource", id = %change.id, action = %change.action);
        let named = change.clone();
        let task = tokio::spawn(
            async move {
                let started = Instant::now();
                let step = 'step: {
                    if let Some((dep, _)) = blocked_by.first() {
                        break 'step StepResult::new(
                            &change,
                            ResultKind::Blocked(dep.clone()),
                            0.0,
                        );
                    }
                    let signals: Vec<(ResourceId, Done)> = dependencies
                        .into_iter()
                        .filter_map(|(dep, signal)| signal.map(|signal| (dep, signal)))
                        .collect();
                    if let Err(step) = wait_for_each(&change, signals, &options).await {
                        break 'step step;
                    }
                    if let Err(not) = holds.before(&change.id, &drivers, &options).await {
                        let ran = match not {
                            restart::NotAttempted::Cancelled => Ran::new(ResultKind::Cancelled),
                            restart::NotAttempted::Failed(why, class) => Ran::failed(why, class),
                        };
                        break 'step ran.finish(&change, started);
                    }
                    run_change(&change, &drivers, &semaphore, &options)
                        .await
                        .finish(&change, started)
                };
                holds.after(&change.id, &drivers, &options).await;
                let _ = sender.send(matches!(step.result, ResultKind::Applied));
                events(RunEvent::Finished(&step));
                step
            }
            .instrument(span),
        );
        tasks.push((named, task));
    }
    collect(tasks, &mut results).await;

    // Phase 2: deletes, each after the deletes of its dependents ([`Plan::delete_after`]);
    // independent ones in parallel.
    let deletes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    let mut senders = BTreeMap::new();
    let mut deleted: BTreeMap<ResourceId, Done> = BTreeMap::new();
    for change in &deletes {
        let (sender, signal) = done_signal();
        senders.insert(change.id.clone(), sender);
        deleted.insert(change.id.clone(), signal);
    }
    let mut tasks = Vec::new();
    for change in deletes {
        let waits: Vec<(ResourceId, Done)> = plan
            .delete_after
            .get(&change.id)
            .into_iter()
            .flatten()
            .filter_map(|dependent| {
                let signal = deleted.get(dependent)?.clone();
                Some((dependent.clone(), signal))
            })
            .collect();
        let sender = senders.remove(&change.id);
        let change = change.clone();
        let drivers = drivers.clone();
        let semaphore = semaphore.clone();
        let options = options.clone();
        let events = events.clone();
        let span = tracing::info_span!("resource", id = %change.id, action = "delete");
        let named = change.clone();
        let task = tokio::spawn(
            async move {
                let started = Instant::now();
                let step = 'step: {
                    // A dependent still there keeps what it depends on.
                    if let Err(step) = wait_for_each(&change, waits, &options).await {
                        break 'step step;
                    }
                    run_change(&change, &drivers, &semaphore, &options)
                        .await
                        .finish(&change, started)
                };
                if let Some(sender) = sender {
                    let _ = sender.send(matches!(step.result, ResultKind::Applied));
                }
                events(RunEvent::Finished(&step));
                step
            }
            .instrument(span),
        );
        tasks.push((named, task));
    }
    collect(tasks, &mut results).await;

    let restarts = holds.results().await;
    fail_restarted(&mut results, &restarts);
    Report {
        revision: plan.revision.clone(),
        results,
        restarts,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Tells each driver the changes of its kind this run carries out
/// ([`crate::contract::Driver::prepare_apply`]), leaving out those whose dependencies are
/// already known to be unusable.
fn prepare(
    plan: &Plan,
    graph: &DependencyGraph,
    drivers: &Drivers,
    unusable: &BTreeMap<ResourceId, String>,
) {
    for kind in drivers.kinds() {
        let Some(driver) = drivers.get(kind) else {
            continue;
        };
        let changes: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.id.kind == kind && c.action.is_change())
            .filter(|c| {
                graph
                    .dependencies(&c.id)
                    .iter()
                    .all(|dep| !unusable.contains_key(dep))
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        // Preparing is only a head start (apply works for a change never prepared): a
        // driver that panics here is a bug to report, and its steps run unprepared.
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            driver.prepare_apply(&changes)
        }));
        if let Err(payload) = prepared {
            tracing::error!(
                %kind,
                error = %panic::message(payload.as_ref()),
                "the driver panicked preparing its changes (a gitvisor bug, please report it); \
                 its steps run unprepared"
            );
        }
    }
}

/// A dependent whose stop or start failed is not as declared, whatever its own change
/// came to: its result becomes that failure (so its status and the report say so).
fn fail_restarted(results: &mut [StepResult], restarts: &[RestartResult]) {
    for restart in restarts {
        let ResultKind::Failed(failure) = &restart.result else {
            continue;
        };
        for step in results.iter_mut().filter(|s| s.id == restart.id) {
            if step.ok() || step.skipped() {
                step.fail(failure.clone());
            }
        }
    }
}

/// One spawned step and the change it carries out (to name it if the task itself fails).
type Task = (Change, tokio::task::JoinHandle<StepResult>);

/// A step's outcome for those waiting on it: the step sends whether it succeeded; a step
/// that ends without sending (its task failed) reads as not succeeded.
fn done_signal() -> (tokio::sync::oneshot::Sender<bool>, Done) {
    let (sender, receiver) = tokio::sync::oneshot::channel::<bool>();
    let signal = receiver.map(|r| r.unwrap_or(false)).boxed().shared();
    (sender, signal)
}

/// Waits for each `(id, signal)` in turn, before `change` may run: the step's result
/// instead when the run is cancelled meanwhile (`Cancelled`) or a signal says its
/// resource did not get where `change` needs it (`Blocked` by that resource).
async fn wait_for_each(
    change: &Change,
    signals: Vec<(ResourceId, Done)>,
    options: &ExecuteOptions,
) -> Result<(), StepResult> {
    for (id, signal) in signals {
        let succeeded = signal.await;
        if options.cancel.is_cancelled() {
            return Err(StepResult::new(change, ResultKind::Cancelled, 0.0));
        }
        if !succeeded {
            return Err(StepResult::new(change, ResultKind::Blocked(id), 0.0));
        }
    }
    Ok(())
}

/// Waits for every task, in order, and keeps their results. A task that panicked outside
/// the driver calls (which are caught where they run) still reports its resource, as a
/// failed bug: a resource never vanishes from the report.
async fn collect(tasks: Vec<Task>, results: &mut Vec<StepResult>) {
    for (change, task) in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(err) => {
                let message = if err.is_panic() {
                    panic::message(err.into_panic().as_ref())
                } else {
                    err.to_string()
                };
                let why = format!(
                    "the executor's step for {} ended without a result: {message}; this is a \
                     gitvisor bug (please report it with the log); the next run tries again",
                    change.id
                );
                tracing::error!(id = %change.id, error = %why, "executor task failed");
                results.push(StepResult::new(
                    &change,
                    ResultKind::Failed(Failure::new(FailureClass::Bug, why)),
                    0.0,
                ));
            }
        }
    }
}

/// What one step came to.
struct Ran {
    result: ResultKind,
}

impl Ran {
    fn new(result: ResultKind) -> Self {
        Ran { result }
    }

    fn failed(why: String, class: FailureClass) -> Self {
        Ran {
            result: ResultKind::Failed(Failure::new(class, why)),
        }
    }

    fn finish(self, change: &Change, started: Instant) -> StepResult {
        StepResult::new(change, self.result, started.elapsed().as_secs_f64())
    }
}

async fn run_change(
    change: &Change,
    drivers: &Drivers,
    semaphore: &Arc<Semaphore>,
    options: &ExecuteOptions,
) -> Ran {
    let Some(driver) = drivers.get(change.id.kind) else {
        return Ran::failed(
            format!("no driver for kind {}", change.id.kind),
            FailureClass::Bug,
        );
    };
    if options.cancel.is_cancelled() {
        return Ran::new(ResultKind::Cancelled);
    }
    let Ok(permit) = semaphore.clone().acquire_owned().await else {
        return Ran::failed("executor shut down".into(), FailureClass::Bug);
    };
    // Waiting for the permit may have taken a while.
    if options.cancel.is_cancelled() {
        return Ran::new(ResultKind::Cancelled);
    }
    let budget = driver.step_budget(change);
    let step = StepContext::new(
        change.id.clone(),
        options.cancel.clone(),
        budget,
        options.progress.clone(),
    )
    .with_slot(semaphore.clone(), permit);
    let apply = panic::catch_panic(driver.apply(change, &step));
    match tokio::time::timeout_at(step.deadline(), apply).await {
        Ok(Err(message)) => {
            let why = panic::panicked(&change.id, &format!("{} apply", change.action), &message);
            tracing::error!(error = %why, "driver panicked");
            Ran::failed(why, FailureClass::Bug)
        }
        Ok(Ok(Ok(()))) => {
            tracing::info!("applied");
            Ran::new(ResultKind::Applied)
        }
        Ok(Ok(Err(err))) if err.interruption() == Some(&Interrupted::Cancelled) => {
            tracing::info!(error = %err.chain(), "cancelled");
            Ran::new(ResultKind::Cancelled)
        }
        Ok(Ok(Err(err))) => {
            let failure = Failure::of(&err);
            tracing::info!(error = %failure, class = %failure.class, "failed");
            Ran::new(ResultKind::Failed(failure))
        }
        Err(_) => {
            let why = chain(&Interrupted::DeadlineExceeded { budget });
            tracing::warn!(error = %why, "abandoned");
            Ran::failed(format!("{why}; abandoned"), FailureClass::Transient)
        }
    }
}
