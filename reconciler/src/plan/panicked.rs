//! A driver whose `plan` panics is a gitvisor bug, and its kind's resources still get a
//! change each.
//!
//! Without this, a panic while one driver observes the host unwinds out of
//! [`super::make_plan`]: `plan` and `apply` end with exit code 101 and no store record,
//! the controller's reconcile task dies with it, and the other kinds, whose plans were
//! fine, are neither planned nor applied. Instead each driver's `plan` runs under
//! [`catch_panic`]; when it panics, every resource of that kind (declared, and owned
//! but no longer declared) gets an [`Action::Unsupported`] change saying which driver
//! panicked, doing what, and carrying [`PlanPanicked`] as its snapshot. Nothing of that
//! kind is changed (no create, no delete: what the host holds is unknown), its
//! dependents are blocked, the executor reports each as a failure of class
//! [`FailureClass::Bug`](crate::contract::FailureClass::Bug) (recorded with an event),
//! and the other kinds plan and apply as usual. The same holds for the plan made again
//! after an apply to verify it ([`crate::reconcile::verify`]): a step it cannot confirm
//! because the driver panicked is a `Bug` failure too.

use std::sync::Arc;

use crate::contract::panic::catch_panic;
use crate::contract::{Action, Change, PlanContext};
use crate::model::{Kind, Resource};

/// The snapshot of a change planned for a resource whose driver panicked while planning:
/// the change cannot be carried out, and the failure is a bug.
#[derive(Debug, Clone)]
pub struct PlanPanicked {
    /// The panic's message.
    pub message: String,
}

/// Whether `change` stands for a resource whose driver panicked while planning.
pub fn panicked_while_planning(change: &Change) -> bool {
    change.observed_as::<PlanPanicked>().is_some()
}

/// `driver`'s plan of `desired` for `kind`, or, when it panics, the changes that report
/// the panic for every resource of `kind` the revision declares or the store records.
pub(super) async fn plan_catching_panics<F, E>(
    kind: Kind,
    desired: &[Arc<Resource>],
    context: &PlanContext,
    plan: F,
) -> Result<Vec<Change>, E>
where
    F: std::future::Future<Output = Result<Vec<Change>, E>>,
{
    match catch_panic(plan).await {
        Ok(planned) => planned,
        Err(message) => {
            tracing::error!(
                %kind,
                panic = %message,
                "the {kind} driver panicked while planning; this is a gitvisor bug (please report it with the log)"
            );
            Ok(panicked_changes(kind, desired, context, &message))
        }
    }
}

fn panicked_changes(
    kind: Kind,
    desired: &[Arc<Resource>],
    context: &PlanContext,
    message: &str,
) -> Vec<Change> {
    let why = |id: &dyn std::fmt::Display| {
        format!(
            "the {kind} driver panicked while observing the host to plan {id}: {message}; \
             this is a gitvisor bug (please report it with the log); nothing of kind {kind} \
             is changed this run, the next run tries again"
        )
    };
    let snapshot = PlanPanicked {
        message: message.to_owned(),
    };
    let declared = desired.iter().map(|resource| {
        Change::new(resource.id(), Action::Unsupported)
            .with_desired(resource.clone())
            .with_reason(why(&resource.id()))
            .with_observed(snapshot.clone())
    });
    let recorded = context
        .owned
        .iter()
        .filter(|id| id.kind == kind && !desired.iter().any(|r| &r.id() == *id))
        .map(|id| {
            Change::new(id.clone(), Action::Unsupported)
                .with_reason(why(id))
                .with_observed(snapshot.clone())
        });
    declared.chain(recorded).collect()
}
