//! Per-resource retries, driven by each failure's [`FailureClass`].
//!
//! After each reconcile the report's failures are recorded here:
//!
//! - [`FailureClass::Transient`] (and a change the host did not confirm): retried after
//!   an exponential backoff with jitter, 1 s, 2 s, 4 s … capped at 5 min; the backoff
//!   starts over once the resource is as declared;
//! - [`FailureClass::NeedsUser`]: not retried until something may have changed it: a new
//!   revision, a `gitvisor sync` (or SIGHUP), or the next resync tick;
//! - [`FailureClass::Bug`]: as `NeedsUser`, and logged as a bug to report.
//!
//! Until then the resource is *held*: the next reconciles plan it but leave its change
//! (and the changes of what depends on it) out as deferred
//! ([`crate::reconcile::PlanOptions::held`]), so one failing resource neither stalls the
//! others nor is hammered every time something else changes.
//!
//! The error policy keeps the holds (class, attempts, error, when the backoff ends); the
//! retry itself is an entry of the controller's one queue ([`super::scheduler`]), put
//! there from [`Retries::dues`] after each reconcile. What was skipped by the reconcile
//! (held back, outside a targeted reconcile's scope) or cancelled keeps its hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::contract::FailureClass;
use crate::execute::{Report, ResultKind};
use crate::model::ResourceId;

/// The first retry's delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest delay between two retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `attempt` (1-based): the exponential step, of which the
/// upper half is random ("equal jitter"), so retries of many resources spread out but
/// never come sooner than half the step. `random` is in `[0, 1)`.
pub fn backoff(attempt: u32, random: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    let step = BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_CAP);
    let half = step / 2;
    half + half.mul_f64(random.clamp(0.0, 1.0))
}

/// One held resource.
#[derive(Debug, Clone)]
struct Held {
    class: FailureClass,
    attempts: u32,
    /// When to retry; `None`: wait for a new revision, a sync or a resync.
    due: Option<Instant>,
    error: String,
}

/// What status shows about a held resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryView {
    pub class: FailureClass,
    pub attempts: u32,
    /// Seconds until the retry; absent when it waits for a new revision or a sync.
    pub retry_in_seconds: Option<f64>,
}

/// The held resources.
#[derive(Debug, Default)]
pub struct Retries {
    held: BTreeMap<ResourceId, Held>,
    /// Whose change failed when last tried and has not gone through since. Unlike
    /// `held`, a sync or a resync does not forget it: its next success is a retry that
    /// worked, not drift put back ([`Retries::is_retry`]).
    failing: BTreeSet<ResourceId>,
}

impl Retries {
    /// Resources to hold back now, with why.
    pub fn held(&self, now: Instant) -> BTreeMap<ResourceId, String> {
        self.held
            .iter()
            .filter(|(_, held)| held.due.is_none_or(|due| due > now))
            .map(|(id, held)| {
                let why = match held.due {
                    Some(due) => format!(
                        "retry {} in {} after: {}",
                        held.attempts + 1,
                        humantime::format_duration(round(due - now)),
                        held.error
                    ),
                    None => format!(
                        "failed ({}), waiting for a new revision or `gitvisor sync`: {}",
                        held.class, held.error
                    ),
                };
                (id.clone(), why)
            })
            .collect()
    }

    /// When each held resource's retry falls due (those with a backoff).
    pub fn dues(&self) -> impl Iterator<Item = (&ResourceId, Instant)> {
        self.held
            .iter()
            .filter_map(|(id, held)| held.due.map(|due| (id, due)))
    }

    /// The earliest retry still to come.
    #[cfg(test)]
    fn next_due(&self) -> Option<Instant> {
        self.dues().map(|(_, due)| due).min()
    }

    pub fn is_held(&self, id: &ResourceId) -> bool {
        self.held.contains_key(id)
    }

    /// Whether a change to `id` now retries one that failed: held, or released by a
    /// sync or a resync without having gone through since. Such a change is not drift.
    pub fn is_retry(&self, id: &ResourceId) -> bool {
        self.held.contains_key(id) || self.failing.contains(id)
    }

    pub fn view(&self, id: &ResourceId, now: Instant) -> Option<RetryView> {
        self.held.get(id).map(|held| RetryView {
            class: held.class,
            attempts: held.attempts,
            retry_in_seconds: held
                .due
                .map(|due| due.saturating_duration_since(now).as_secs_f64()),
        })
    }

    /// Forgets every hold (a new revision, or a person asked).
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Releases the holds that wait for a person (a resync tick tries them once more);
    /// transient ones keep their backoff.
    pub fn release_waiting(&mut self) {
        self.held.retain(|_, held| held.due.is_some());
    }

    /// Records what a reconcile did: failures are held, successes released; what it
    /// left out (skipped, cancelled, or not in its report at all: a targeted reconcile)
    /// keeps its hold. `random` gives the jitter, one value in `[0, 1)` per call.
    pub fn record(&mut self, report: &Report, now: Instant, mut random: impl FnMut() -> f64) {
        let reported: BTreeSet<&ResourceId> = report.results.iter().map(|r| &r.id).collect();
        let mut next: BTreeMap<ResourceId, Held> = self
            .held
            .iter()
            .filter(|(id, _)| !reported.contains(id))
            .map(|(id, held)| (id.clone(), held.clone()))
            .collect();
        let was_failing = std::mem::take(&mut self.failing);
        for step in &report.results {
            match &step.result {
                ResultKind::Failed(_) if step.action.is_change() => {
                    self.failing.insert(step.id.clone());
                }
                ResultKind::Applied | ResultKind::Unchanged => {}
                _ if was_failing.contains(&step.id) => {
                    self.failing.insert(step.id.clone());
                }
                _ => {}
            }
        }
        for step in &report.results {
            match &step.result {
                ResultKind::Failed(failure) if step.action.is_change() => {
                    let (class, why) = (failure.class, &failure.message);
                    let attempts = self.held.get(&step.id).map_or(0, |h| h.attempts) + 1;
                    let due = (class == FailureClass::Transient)
                        .then(|| now + backoff(attempts, random()));
                    if class == FailureClass::Bug {
                        tracing::error!(
                            resource = %step.id,
                            error = %why,
                            "this failure is a bug in gitvisor; please report it (not retried until a new revision or `gitvisor sync`)"
                        );
                    }
                    next.insert(
                        step.id.clone(),
                        Held {
                            class,
                            attempts,
                            due,
                            error: why.clone(),
                        },
                    );
                }
                ResultKind::Skipped(_) | ResultKind::Cancelled => {
                    if let Some(held) = self.held.remove(&step.id) {
                        next.insert(step.id.clone(), held);
                    }
                }
                _ => {}
            }
        }
        self.held = next;
    }
}

/// Whole seconds, for messages.
fn round(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs_f64().ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Action, Change};
    use crate::execute::{Failure, StepResult};
    use crate::model::{Kind, Name};
    use crate::plan::SkipReason;

    fn id(name: &str) -> ResourceId {
        ResourceId::new(Kind::Bridge, Name::parse(name).unwrap())
    }

    /// A failed result, of the class `step` gives it.
    fn failed(why: &str) -> ResultKind {
        ResultKind::Failed(Failure::new(FailureClass::Transient, why))
    }

    fn step(name: &str, result: ResultKind, class: Option<FailureClass>) -> StepResult {
        let result = match (result, class) {
            (ResultKind::Failed(failure), Some(class)) => {
                ResultKind::Failed(Failure::new(class, failure.message))
            }
            (result, _) => result,
        };
        StepResult::new(&Change::new(id(name), Action::Create), result, 0.0)
    }

    fn report(results: Vec<StepResult>) -> Report {
        Report {
            revision: "r".into(),
            results,
            seconds: 0.0,
            restarts: Vec::new(),
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_the_cap_and_the_jitter_stays_in_the_upper_half() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(
            backoff(1, 0.999_999),
            Duration::from_millis(999) + Duration::from_nanos(999_500)
        );
        assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(4, 0.5), Duration::from_secs(6));
        assert_eq!(backoff(30, 0.0), BACKOFF_CAP / 2);
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_CAP);
    }

    /// A targeted reconcile reports only its scope: the holds of everything else stand.
    #[test]
    fn what_a_reconcile_left_out_keeps_its_hold() {
        let now = Instant::now();
        let mut retries = Retries::default();
        retries.record(
            &report(vec![step(
                "flaky",
                failed("busy"),
                Some(FailureClass::Transient),
            )]),
            now,
            || 0.0,
        );
        retries.record(
            &report(vec![step("other", ResultKind::Applied, None)]),
            now,
            || 0.0,
        );
        assert!(retries.is_held(&id("flaky")), "not in the report");
        retries.record(
            &report(vec![step(
                "flaky",
                ResultKind::Skipped(SkipReason::OutsideTarget),
                None,
            )]),
            now,
            || 0.0,
        );
        assert!(retries.is_held(&id("flaky")), "outside the target");
        assert_eq!(
            retries.dues().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            [id("flaky")]
        );
    }

    #[test]
    fn transient_failures_back_off_and_others_wait_for_a_person() {
        let now = Instant::now();
        let mut retries = Retries::default();
        retries.record(
            &report(vec![
                step("flaky", failed("busy"), Some(FailureClass::Transient)),
                step("refused", failed("no port"), Some(FailureClass::NeedsUser)),
                step("fine", ResultKind::Applied, None),
            ]),
            now,
            || 0.0,
        );
        let held = retries.held(now);
        assert_eq!(
            held.keys().cloned().collect::<Vec<_>>(),
            [id("flaky"), id("refused")]
        );
        assert!(
            held[&id("flaky")].starts_with("retry 2 in 1s after: busy"),
            "{held:?}"
        );
        assert_eq!(retries.next_due(), Some(now + Duration::from_millis(500)));
        // Once due, the transient one is no longer held; the other still is.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            retries.held(later).keys().collect::<Vec<_>>(),
            [&id("refused")]
        );
        // A second transient failure doubles the step.
        retries.record(
            &report(vec![
                step("flaky", failed("busy"), Some(FailureClass::Transient)),
                step(
                    "refused",
                    ResultKind::Skipped(SkipReason::Deferred {
                        why: "waiting".into(),
                    }),
                    None,
                ),
            ]),
            later,
            || 0.0,
        );
        assert_eq!(retries.next_due(), Some(later + Duration::from_secs(1)));
        assert!(
            retries.is_held(&id("refused")),
            "a deferred resource stays held"
        );
        retries.release_waiting();
        assert!(!retries.is_held(&id("refused")));
        assert!(retries.is_held(&id("flaky")));
        // Success releases it.
        retries.record(
            &report(vec![step("flaky", ResultKind::Applied, None)]),
            later,
            || 0.0,
        );
        assert!(retries.held(later).is_empty());
        assert_eq!(retries.next_due(), None);
    }

    /// A failure waiting for a person is released by a resync (or forgotten by a
    /// sync); its change then going through is a retry that worked, not drift.
    #[test]
    fn a_released_failure_is_still_a_retry_until_it_goes_through() {
        let now = Instant::now();
        let mut retries = Retries::default();
        let failed = |class| report(vec![step("stuck", failed("no such image"), Some(class))]);
        retries.record(&failed(FailureClass::NeedsUser), now, || 0.0);
        retries.release_waiting();
        assert!(!retries.is_held(&id("stuck")));
        assert!(retries.is_retry(&id("stuck")), "released by a resync");
        // Skipped or blocked meanwhile: still failing.
        retries.record(
            &report(vec![step("stuck", ResultKind::Blocked(id("other")), None)]),
            now,
            || 0.0,
        );
        assert!(retries.is_retry(&id("stuck")));
        retries.record(&failed(FailureClass::Transient), now, || 0.0);
        retries.clear();
        assert!(retries.is_retry(&id("stuck")), "forgotten by a sync");
        // It went through: a later change to it is drift again.
        retries.record(
            &report(vec![step("stuck", ResultKind::Applied, None)]),
            now,
            || 0.0,
        );
        assert!(!retries.is_retry(&id("stuck")));
        assert!(!retries.is_retry(&id("never-failed")));
    }
}
