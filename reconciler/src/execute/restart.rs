//! Stopping the running dependents of a disruptive change before it, and starting them
//! again after (the plan's [`Plan::restarts`]; the contract is
//! [`crate::contract::restart`]).
//!
//! Steps, around each disruptive change (the cause), in its own task:
//! 1. Before the driver's apply: every dependent listed for the cause and not stopped
//!    yet is stopped, dependents of dependents first. A dependent that cannot be stopped
//!    fails the cause, which is then not attempted: a Volume is never replaced under a
//!    VM that still runs on it.
//! 2. After the cause finished, whatever its result (or without it running at all, when
//!    it was blocked or cancelled): each dependent that no other cause still waits for
//!    is started again, dependencies first. Starting is not cancelled with the run: a
//!    stopped workload is left running again, not stopped, when gitvisor stops.
//!
//! A dependent shared by several causes is stopped by the first to run and started by
//! the last to finish. Stops and starts run one at a time (one lock), so two causes
//! never race on one dependent.
//!
//! A driver whose `stop` or `start` panics fails that call as a bug (see `panic.rs`);
//! a cause whose apply panicked still finishes, so its dependents are started again.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Mutex;

use super::{ExecuteOptions, ResultKind};
use crate::contract::{
    CancelToken, Change, Driver, DriverError, Drivers, FailureClass, Interrupted, StepContext,
    chain,
};
use crate::model::ResourceId;
use crate::plan::Plan;

/// What became of one dependent that was stopped for its causes.
#[derive(Debug, Clone, Serialize)]
pub struct RestartResult {
    pub id: ResourceId,
    /// The disruptive changes it was stopped for.
    pub because: Vec<ResourceId>,
    /// `applied`: stopped and started again; `failed`: the stop or the start failed
    /// (with why); `cancelled`: the run was cancelled before it could be stopped.
    #[serde(flatten)]
    pub result: ResultKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    pub seconds: f64,
}

/// One dependent's progress through its causes.
struct Held {
    /// Its own planned change (what its driver's `stop` and `start` get).
    change: Change,
    causes: Vec<ResourceId>,
    /// Causes that have not finished yet.
    remaining: usize,
    /// Stop was attempted (so start must be).
    stopped: bool,
    started: Option<Instant>,
    failure: Option<(String, FailureClass)>,
    done: bool,
}

/// The dependents to hold around each cause, and their state.
pub(super) struct Holds {
    /// Cause → its dependents, in dependency order.
    by_cause: BTreeMap<ResourceId, Vec<ResourceId>>,
    held: Mutex<BTreeMap<ResourceId, Held>>,
}

/// Why a cause was not attempted.
pub(super) enum NotAttempted {
    Cancelled,
    Failed(String, FailureClass),
}

impl Holds {
    pub(super) fn new(plan: &Plan) -> Holds {
        let own: BTreeMap<&ResourceId, &Change> = plan
            .changes
            .iter()
            .chain(plan.skipped.iter().map(|s| &s.change))
            .map(|c| (&c.id, c))
            .collect();
        let mut by_cause: BTreeMap<ResourceId, Vec<ResourceId>> = BTreeMap::new();
        let mut held = BTreeMap::new();
        for restart in plan.restarts.iter().filter(|r| r.restarts()) {
            let Some(change) = own.get(&restart.id) else {
                continue;
            };
            let causes: Vec<ResourceId> = restart.causes.iter().map(|(id, _)| id.clone()).collect();
            for cause in &causes {
                by_cause
                    .entry(cause.clone())
                    .or_default()
                    .push(restart.id.clone());
            }
            held.insert(
                restart.id.clone(),
                Held {
                    change: (*change).clone(),
                    remaining: causes.len(),
                    causes,
                    stopped: false,
                    started: None,
                    failure: None,
                    done: false,
                },
            );
        }
        Holds {
            by_cause,
            held: Mutex::new(held),
        }
    }

    /// Stops `cause`'s dependents that are not stopped yet, dependents of dependents
    /// first. `Err`: the cause must not be attempted.
    pub(super) async fn before(
        &self,
        cause: &ResourceId,
        drivers: &Drivers,
        options: &ExecuteOptions,
    ) -> Result<(), NotAttempted> {
        let Some(dependents) = self.by_cause.get(cause) else {
            return Ok(());
        };
        let mut held = self.held.lock().await;
        for id in dependents.iter().rev() {
            let Some(entry) = held.get_mut(id) else {
                continue;
            };
            if entry.stopped {
                if let Some((why, class)) = &entry.failure {
                    return Err(not_stopped(id, why, *class));
                }
                continue;
            }
            if options.cancel.is_cancelled() {
                return Err(NotAttempted::Cancelled);
            }
            entry.stopped = true;
            entry.started = Some(Instant::now());
            let Some(driver) = drivers.get(id.kind) else {
                continue;
            };
            let outcome = call(
                driver,
                &entry.change,
                options.cancel.clone(),
                options,
                Call::Stop,
            )
            .await;
            if let Err((why, class)) = outcome {
                let why = format!("could not be stopped before {cause} changed: {why}");
                entry.failure = Some((why.clone(), class));
                return Err(not_stopped(id, &why, class));
            }
            tracing::info!(%id, %cause, "dependent stopped");
        }
        Ok(())
    }

    /// `cause` finished (or never ran): starts each dependent no other cause still
    /// waits for, dependencies first.
    pub(super) async fn after(
        &self,
        cause: &ResourceId,
        drivers: &Drivers,
        options: &ExecuteOptions,
    ) {
        let Some(dependents) = self.by_cause.get(cause) else {
            return;
        };
        let mut held = self.held.lock().await;
        for id in dependents {
            let Some(entry) = held.get_mut(id) else {
                continue;
            };
            entry.remaining = entry.remaining.saturating_sub(1);
            if entry.remaining > 0 || !entry.stopped || entry.done {
                continue;
            }
            entry.done = true;
            let Some(driver) = drivers.get(id.kind) else {
                continue;
            };
            // Not the run's token: a stopped workload is started again even when the run
            // is being cancelled.
            let outcome = call(
                driver,
                &entry.change,
                CancelToken::new(),
                options,
                Call::Start,
            )
            .await;
            match outcome {
                Ok(()) => tracing::info!(%id, "dependent started again"),
                Err((why, class)) => {
                    let why = format!(
                        "could not be started again after {}: {why}",
                        list(&entry.causes)
                    );
                    tracing::warn!(%id, error = %why, "dependent left stopped");
                    // The stop's failure, if any, came first and says more.
                    entry.failure.get_or_insert((why, class));
                }
            }
        }
    }

    /// What became of every dependent that was stopped (or tried to be).
    pub(super) async fn results(&self) -> Vec<RestartResult> {
        self.held
            .lock()
            .await
            .iter()
            .filter(|(_, held)| held.stopped)
            .map(|(id, held)| {
                let seconds = held.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                let (result, class) = match &held.failure {
                    Some((why, class)) => (
                        ResultKind::Failed(super::Failure::new(*class, why.clone())),
                        Some(*class),
                    ),
                    None => (ResultKind::Applied, None),
                };
                RestartResult {
                    id: id.clone(),
                    because: held.causes.clone(),
                    result,
                    class,
                    seconds,
                }
            })
            .collect()
    }
}

fn not_stopped(id: &ResourceId, why: &str, class: FailureClass) -> NotAttempted {
    NotAttempted::Failed(format!("not attempted: dependent {id} {why}"), class)
}

fn list(ids: &[ResourceId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Copy)]
enum Call {
    Stop,
    Start,
}

/// One `stop` or `start`, with the driver's step budget as its deadline.
async fn call(
    driver: &dyn Driver,
    change: &Change,
    cancel: CancelToken,
    options: &ExecuteOptions,
    what: Call,
) -> Result<(), (String, FailureClass)> {
    let budget = driver.step_budget(change);
    let step = StepContext::new(change.id.clone(), cancel, budget, options.progress.clone());
    let request = crate::contract::panic::catch_panic(async {
        match what {
            Call::Stop => driver.stop(change, &step).await,
            Call::Start => driver.start(change, &step).await,
        }
    });
    match tokio::time::timeout_at(step.deadline(), request).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(failure(&err)),
        Ok(Err(message)) => {
            let call = match what {
                Call::Stop => "stop",
                Call::Start => "start",
            };
            let why = crate::contract::panic::panicked(&change.id, call, &message);
            tracing::error!(id = %change.id, error = %why, "driver panicked");
            Err((why, FailureClass::Bug))
        }
        Err(_) => Err((
            format!(
                "{}; abandoned",
                chain(&Interrupted::DeadlineExceeded { budget })
            ),
            FailureClass::Transient,
        )),
    }
}

fn failure(err: &DriverError) -> (String, FailureClass) {
    (err.chain(), err.class())
}
