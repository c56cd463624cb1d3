//! What the executor reports: one result per resource, with its duration.
//!
//! Results are typed: a skip carries its [`SkipReason`], a failure its [`Failure`] (the
//! driver error's words and class), so a controller acts on them without reading words.
//! Reports render them as they always read: the reason's and the failure's text.

use std::fmt;

use serde::Serialize;

use super::RestartResult;
use crate::contract::{Action, Change, DriverError, FailureClass};
use crate::model::ResourceId;
use crate::plan::SkipReason;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "detail")]
pub enum ResultKind {
    /// The change was carried out.
    Applied,
    /// Nothing to do.
    Unchanged,
    /// The driver failed (or the change could not be attempted: conflict, no driver).
    /// Reported in words, as the failure displays; its class beside it.
    #[serde(serialize_with = "as_text")]
    Failed(Failure),
    /// A dependency failed or is unusable, so this was not attempted; for a delete, a
    /// dependent whose delete did not go through.
    Blocked(ResourceId),
    /// Left out on purpose (an unconfirmed delete, outside `--target`, held back by the
    /// controller): the host and the store's record of the resource stay as they are.
    /// Reported in words, as the reason displays.
    #[serde(serialize_with = "as_text")]
    Skipped(SkipReason),
    /// The run was cancelled before this step started, or the step stopped at a safe
    /// point when it was; the next run carries on.
    Cancelled,
}

/// Why a change failed, and what a controller should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    /// The error and every cause, `a: b: c`.
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }

    /// A driver's error: its class and its whole cause chain.
    pub fn of(error: &DriverError) -> Self {
        Failure::new(error.class(), error.chain())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A skip reason or a failure as reports have always shown it: its words.
fn as_text<S: serde::Serializer>(
    value: &impl fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub id: ResourceId,
    pub action: Action,
    #[serde(flatten)]
    pub result: ResultKind,
    pub seconds: f64,
    /// For a failure: what a controller should do about it (retry, wait for a person,
    /// report a bug). Set from the result ([`ResultKind::Failed`]), kept for the
    /// reports' JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Left out because the controller holds it back (a retry waiting, a failure waiting
    /// for a new revision): skipped, but not as declared either. Set from the result
    /// ([`ResultKind::Skipped`] with [`SkipReason::Deferred`]), kept for the reports'
    /// JSON.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    #[serde(skip)]
    pub spec_hash: Option<String>,
}

impl StepResult {
    pub fn new(change: &Change, result: ResultKind, seconds: f64) -> Self {
        StepResult {
            id: change.id.clone(),
            action: change.action,
            deferred: matches!(result, ResultKind::Skipped(SkipReason::Deferred { .. })),
            class: failure_class(&result),
            result,
            seconds,
            spec_hash: change.desired.as_ref().and_then(|resource| {
                resource
                    .spec_hash()
                    .inspect_err(|error| {
                        tracing::error!(id = %change.id, %error, "cannot hash the declared spec; the store records no hash for it")
                    })
                    .ok()
            }),
        }
    }

    /// Turns this result into `failure` (a change the host did not confirm, a
    /// dependent whose restart failed).
    pub fn fail(&mut self, failure: Failure) {
        self.class = Some(failure.class);
        self.deferred = false;
        self.result = ResultKind::Failed(failure);
    }

    /// Whether the resource is as declared: applied or unchanged.
    pub fn ok(&self) -> bool {
        matches!(self.result, ResultKind::Applied | ResultKind::Unchanged)
    }

    /// Why the resource is not as declared, without the action: the message a status
    /// records next to its state (`Failed`, `Blocked`, …); `None` when it is ok or was left
    /// out on purpose.
    pub fn problem(&self) -> Option<String> {
        match &self.result {
            ResultKind::Failed(failure) => Some(failure.message.clone()),
            ResultKind::Blocked(dependent) if self.action == Action::Delete => Some(format!(
                "dependent {dependent} was not deleted, so what it depends on stays"
            )),
            ResultKind::Blocked(dep) => Some(format!("dependency {dep} is not ready")),
            ResultKind::Cancelled => {
                Some("the run was stopped; the next run carries on".to_owned())
            }
            ResultKind::Applied | ResultKind::Unchanged | ResultKind::Skipped(_) => None,
        }
    }

    /// Why the resource is not as declared, in words (`update failed: …`, `conflict: …`,
    /// `blocked: …`): [`StepResult::problem`] with what was attempted, as apply's lines,
    /// its summary and the store's events say it. `None` when it is ok or was left out on
    /// purpose.
    pub fn failure(&self) -> Option<String> {
        let problem = self.problem()?;
        Some(match &self.result {
            // A dependent that no change of its own touched: the problem says it all.
            ResultKind::Failed(_) if self.action == Action::NoOp => problem,
            ResultKind::Failed(_) if !self.action.is_change() => {
                format!("{}: {problem}", self.action)
            }
            ResultKind::Failed(_) => format!("{} failed: {problem}", self.action),
            ResultKind::Blocked(_) => format!("blocked: {problem}"),
            _ => format!("{} cancelled: {problem}", self.action),
        })
    }

    /// Whether the change was left out on purpose (neither ok nor a failure).
    pub fn skipped(&self) -> bool {
        matches!(self.result, ResultKind::Skipped(_))
    }
}

/// The class of a failed result.
pub fn failure_class(result: &ResultKind) -> Option<FailureClass> {
    match result {
        ResultKind::Failed(failure) => Some(failure.class),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub revision: String,
    pub results: Vec<StepResult>,
    /// The running dependents that were stopped around disruptive changes, and whether
    /// they were started again (a failure is also the dependent's own result).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<RestartResult>,
    pub seconds: f64,
}

impl Report {
    /// Whether every change that was not left out on purpose succeeded, and none was
    /// held back by the controller.
    pub fn converged(&self) -> bool {
        self.failures().next().is_none() && !self.results.iter().any(|r| r.deferred)
    }

    /// Changes that failed or were blocked (not those left out on purpose).
    pub fn failures(&self) -> impl Iterator<Item = &StepResult> {
        self.results.iter().filter(|r| !r.ok() && !r.skipped())
    }

    /// The steps that did not run, or stopped early, because the run was cancelled.
    pub fn cancelled(&self) -> impl Iterator<Item = &StepResult> {
        self.results
            .iter()
            .filter(|r| r.result == ResultKind::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Name};

    fn change() -> Change {
        Change::new(
            ResourceId::new(Kind::Bridge, Name::parse("br0").unwrap()),
            Action::Update,
        )
    }

    /// Typed results read in reports as the words they always were.
    #[test]
    fn typed_results_render_as_their_words_with_class_and_deferred_beside() {
        let deferred = StepResult::new(
            &change(),
            ResultKind::Skipped(SkipReason::Deferred {
                why: "retry 2 in 1s after: busy".into(),
            }),
            0.0,
        );
        assert!(deferred.deferred && deferred.skipped() && deferred.class.is_none());
        let json = serde_json::to_value(&deferred).unwrap();
        assert_eq!(json["result"], "skipped");
        assert_eq!(json["detail"], "deferred: retry 2 in 1s after: busy");
        assert_eq!(json["deferred"], true);

        let failed = StepResult::new(
            &change(),
            ResultKind::Failed(Failure::new(FailureClass::NeedsUser, "refused: a: b")),
            0.0,
        );
        assert_eq!(failed.class, Some(FailureClass::NeedsUser));
        assert_eq!(
            failed.failure().as_deref(),
            Some("update failed: refused: a: b")
        );
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["result"], "failed");
        assert_eq!(json["detail"], "refused: a: b");
        assert_eq!(json["class"], "needsUser");
        assert!(json.get("deferred").is_none());

        let mut unconfirmed = StepResult::new(&change(), ResultKind::Applied, 0.0);
        unconfirmed.fail(Failure::new(FailureClass::Transient, "not on the host"));
        assert_eq!(unconfirmed.class, Some(FailureClass::Transient));
        assert!(!unconfirmed.ok());
    }
}
