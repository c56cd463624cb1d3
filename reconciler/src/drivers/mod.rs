//! Drivers: one per kind, each reaching the host only through a small seam (a netlink
//! handle, a command runner, a runtime client) so unit tests use recording fakes.
//!
//! A driver does two things:
//! 1. [`Driver::plan`]: observe every object of its kind *in one batch* and diff it against
//!    the declared resources, yielding one [`Change`] per declared or owned object.
//! 2. [`Driver::apply`]: carry out one change. Each step is idempotent, so a run that
//!    crashed halfway is repaired by the next one.
//!
//! Every kind also has a host probe in its folder ([`probe`]), including the kinds whose
//! driver this build does not have yet (`volume/`, `container/`, `vm/`), for
//! `gitvisor doctor`.

pub mod bridge;
pub mod container;
pub mod probe;
pub mod vm;
pub mod volume;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Kind, Resource, ResourceId};
use crate::plan::Change;

/// What gitvisor knows independently of the host when it plans.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Objects the state store records as created (or being created) by gitvisor. Pruning
    /// needs both this record and the marker on the object itself.
    pub owned: BTreeSet<ResourceId>,
}

/// A driver's snapshot of one observed object, carried from plan to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Bridge(bridge::ObservedBridge),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error("{id}: {message}")]
    Other { id: ResourceId, message: String },
}

#[async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> Kind;

    /// Observe in one batch and diff. `desired` holds only this driver's kind, already
    /// filtered for this host.
    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError>;

    /// Carry out one change of `Create`, `Update`, `Replace` or `Delete`.
    async fn apply(&self, change: &Change) -> Result<(), DriverError>;
}

/// The drivers this process uses, one per kind at most. Kinds without one plan as
/// `unsupported`.
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
