//! After an apply, look again: a resource is reported converged only when the host now
//! matches its declaration.
//!
//! The host is observed once more, one batch per driver whose kind had a step applied
//! (the plan made again, targeted at the applied resources: the rest is carried), and
//! every change the executor reported as applied is checked against it: a create, update
//! or replace must now plan as a no-op, a delete must not plan again. Anything else is
//! turned into a failure naming what still differs, so a kernel that silently refused or
//! merged something (an address it keeps once, a flag it ignores) is never reported as
//! converged. A driver that panics while observing again cannot confirm its kind's
//! steps: they fail as bugs (`plan/panicked.rs`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::contract::FailureClass;
use crate::drivers::DriverError;
use crate::execute::{Failure, Report, ResultKind};
use crate::model::ResourceId;
use crate::plan::{Action, Change, Plan, PlanPanicked};

/// Turns every applied step that `observed` (the plan made again after the apply)
/// contradicts into a failure; when the host could not be observed, no applied step can
/// be confirmed.
pub fn verify(report: &mut Report, observed: Result<Plan, DriverError>) {
    let observed = match observed {
        Ok(plan) => plan,
        Err(err) => {
            let why = format!("cannot observe the host to confirm the change: {err}");
            for step in &mut report.results {
                if step.result == ResultKind::Applied {
                    step.fail(Failure::new(FailureClass::Transient, why.clone()));
                }
            }
            return;
        }
    };
    let now: BTreeMap<&ResourceId, &Change> = observed.changes.iter().map(|c| (&c.id, c)).collect();
    for step in &mut report.results {
        if step.result != ResultKind::Applied {
            continue;
        }
        let remaining = now.get(&step.id).copied();
        if let Some(panicked) = remaining.and_then(|c| c.observed_as::<PlanPanicked>()) {
            step.fail(Failure::new(
                FailureClass::Bug,
                format!(
                    "cannot confirm the change: the {} driver panicked while observing the host \
                     again after the apply: {}; this is a gitvisor bug (please report it with the \
                     log); the next run looks again",
                    step.id.kind, panicked.message
                ),
            ));
            continue;
        }
        let mismatch = match step.action {
            Action::Delete => remaining
                .filter(|c| c.action == Action::Delete)
                .map(|_| "the object is still on the host".to_owned()),
            _ => match remaining {
                Some(c) if c.action == Action::NoOp => None,
                Some(c) => Some(describe(c)),
                None => Some("the object is not on the host".to_owned()),
            },
        };
        if let Some(what) = mismatch {
            step.fail(Failure::new(
                FailureClass::Transient,
                format!("host does not match after apply: {what}"),
            ));
        }
    }
}

/// What a change found on the host still differs, in words.
fn describe(change: &Change) -> String {
    match change.action {
        Action::Create => "the object is not on the host".to_owned(),
        _ if !change.fields.is_empty() => change
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{} is {} on the host, declared {}",
                    f.path,
                    show(&f.old),
                    show(&f.new)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => change
            .reason()
            .unwrap_or_else(|| format!("the host still needs a {}", change.action)),
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "unset".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::StepResult;
    use crate::model::{Kind, Name};
    use crate::plan::{Effect, FieldChange};

    fn id(name: &str) -> ResourceId {
        ResourceId::new(Kind::Bridge, Name::parse(name).unwrap())
    }

    fn report(steps: &[(&str, Action, ResultKind)]) -> Report {
        Report {
            revision: "r".into(),
            restarts: Vec::new(),
            seconds: 0.0,
            results: steps
                .iter()
                .map(|(name, action, result)| {
                    StepResult::new(&Change::new(id(name), *action), result.clone(), 0.0)
                })
                .collect(),
        }
    }

    fn observed(changes: Vec<Change>) -> Plan {
        Plan {
            revision: "r".into(),
            host: "h".into(),
            changes,
            skipped: Vec::new(),
            restarts: Vec::new(),
            delete_after: Default::default(),
        }
    }

    #[test]
    fn applied_but_still_different_is_a_failure() {
        let mut report = report(&[
            ("same", Action::Update, ResultKind::Applied),
            ("merged", Action::Create, ResultKind::Applied),
            ("gone", Action::Create, ResultKind::Applied),
            ("deleted", Action::Delete, ResultKind::Applied),
            ("undead", Action::Delete, ResultKind::Applied),
            (
                "failed",
                Action::Update,
                ResultKind::Failed(Failure::new(FailureClass::Transient, "boom")),
            ),
        ]);
        let again = observed(vec![
            Change::new(id("same"), Action::NoOp),
            Change::new(id("merged"), Action::Update).with_fields(vec![FieldChange::new(
                "addresses",
                ["fd00::1/64"],
                ["fd00::1/64", "fd00::1/48"],
                Effect::Hot,
            )]),
            Change::new(id("undead"), Action::Delete),
            Change::new(id("failed"), Action::Update),
        ]);
        verify(&mut report, Ok(again));
        let result = |name: &str| {
            report
                .results
                .iter()
                .find(|r| r.id == id(name))
                .unwrap()
                .result
                .clone()
        };
        assert_eq!(result("same"), ResultKind::Applied);
        assert_eq!(result("deleted"), ResultKind::Applied);
        assert_eq!(
            result("merged"),
            ResultKind::Failed(Failure::new(
                FailureClass::Transient,
                "host does not match after apply: addresses is [\"fd00::1/64\"] on the host, \
                 declared [\"fd00::1/64\",\"fd00::1/48\"]"
            ))
        );
        assert_eq!(
            result("gone"),
            ResultKind::Failed(Failure::new(
                FailureClass::Transient,
                "host does not match after apply: the object is not on the host"
            ))
        );
        assert_eq!(
            result("undead"),
            ResultKind::Failed(Failure::new(
                FailureClass::Transient,
                "host does not match after apply: the object is still on the host"
            ))
        );
        assert_eq!(
            result("failed"),
            ResultKind::Failed(Failure::new(FailureClass::Transient, "boom"))
        );
        assert!(!report.converged());
    }

    #[test]
    fn an_unobservable_host_confirms_nothing() {
        let mut report = report(&[
            ("a", Action::Create, ResultKind::Applied),
            ("b", Action::NoOp, ResultKind::Unchanged),
        ]);
        let err = DriverError::new(
            crate::contract::FailureClass::Transient,
            std::io::Error::other("netlink dump failed"),
        );
        verify(&mut report, Err(err));
        assert!(
            matches!(&report.results[0].result, ResultKind::Failed(Failure { message: why, .. }) if why.contains("netlink dump failed"))
        );
        assert_eq!(report.results[1].result, ResultKind::Unchanged);
    }
}
