//! The [`Driver`] trait, and [`Drivers`], the set a run uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::change::Change;
use super::context::PlanContext;
use super::error::{ContractViolation, DriverError};
use super::restart::RestartSupport;
use super::step::{DEFAULT_STEP_BUDGET, StepContext};
use super::watch::{WatchSink, Watching};
use crate::model::{Kind, Resource};

/// One kind's driver. It reaches the host only through its own seam.
#[async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> Kind;

    /// Observe every object of the kind *in one batch* and diff it against `desired`:
    /// one [`Change`] per declared resource and per owned object no longer declared.
    /// `desired` holds only this driver's kind, already filtered for this host; the rest
    /// of the revision is in `context`. Plans change nothing on the host.
    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError>;

    /// Carry out one change of `Create`, `Update`, `Replace` or `Delete` (the others are
    /// no-ops), from the snapshot the plan attached. Each request is idempotent; check
    /// `step` between requests and stop when it says so.
    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError>;

    /// Told once per run, before any step starts, every change of this kind the run will
    /// carry out (`Create`, `Update`, `Replace`, `Delete`; never one the plan's scope left
    /// out, nor one already known to be blocked), so the steps can share work: e.g. one
    /// host request for all of them instead of one each. It must not touch the host;
    /// [`Driver::apply`] must still work for a change never prepared. The default: nothing.
    fn prepare_apply(&self, _changes: &[&Change]) {}

    /// How long one apply of `change` may take before the executor abandons it as hung.
    fn step_budget(&self, _change: &Change) -> Duration {
        DEFAULT_STEP_BUDGET
    }

    /// Whether the object of `change` (this driver's own plan for it) must be stopped,
    /// and can be, while something it depends on is replaced or restarted (see
    /// [`restart`](super::restart)). The default: this kind's objects cannot be stopped
    /// by gitvisor, and keep running.
    fn restart_support(&self, change: &Change) -> RestartSupport {
        RestartSupport::Unsupported(format!(
            "the {} driver cannot stop and start its objects",
            change.id.kind
        ))
    }

    /// Stops the object of `change` before a disruptive change to something it uses.
    /// Called only when [`Driver::restart_support`] said `Supported`. Idempotent.
    async fn stop(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        Err(not_implemented(change, "stop"))
    }

    /// Starts the object of `change` again after the disruptive change. Idempotent.
    async fn start(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        Err(not_implemented(change, "start"))
    }

    /// Whether `change` (this driver's own plan) is its kind's policy at work rather
    /// than a repair of drift someone made: a container's `restartPolicy` starting again
    /// what ended. The controller does not count such a change as a drift repair. The
    /// default: no change is.
    fn is_policy_at_work(&self, _change: &Change) -> bool {
        false
    }

    /// Starts watching the host for changes to this kind's objects (see
    /// [`watch`](super::watch)): watch tasks send a [`HostEvent`](super::HostEvent) into
    /// `sink` whenever the host announces that an object may have changed, until the
    /// returned handle is dropped. Called once, by the controller, inside the Tokio
    /// runtime; one-shot commands never watch. The default: not watched (the resync
    /// alone looks again).
    fn watch(&self, _sink: WatchSink) -> Result<Watching, DriverError> {
        Ok(Watching::NotWatched {
            why: format!("the {} driver has no watch", self.kind()),
        })
    }
}

/// A driver said it can stop and start its objects but does not implement `what`.
fn not_implemented(change: &Change, what: &str) -> DriverError {
    ContractViolation {
        id: change.id.clone(),
        message: format!(
            "the {} driver says it can restart its objects but does not implement {what}",
            change.id.kind
        ),
    }
    .into()
}

/// The drivers a run uses, one per kind at most. Kinds without one plan as
/// `unsupported`. Built from the registry ([`crate::drivers::connect_all`]) in the binary,
/// from fakes in tests.
#[derive(Default)]
pub struct Drivers {
    drivers: Vec<Box<dyn Driver>>,
}

impl Drivers {
    pub fn new(drivers: Vec<Box<dyn Driver>>) -> Self {
        Drivers { drivers }
    }

    /// The kinds this set has a driver for.
    pub fn kinds(&self) -> Vec<Kind> {
        self.drivers.iter().map(|d| d.kind()).collect()
    }

    pub fn get(&self, kind: Kind) -> Option<&dyn Driver> {
        self.drivers
            .iter()
            .find(|d| d.kind() == kind)
            .map(|d| d.as_ref())
    }
}
