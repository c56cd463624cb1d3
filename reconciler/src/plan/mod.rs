//! Plans: every declared or owned resource's [`Change`], ordered for execution and
//! rendered for people ([`render`]) or as JSON.
//!
//! Order: declared resources in dependency order (what they need comes first), then
//! deletes, dependents first as the last applied graph recorded them ([`order_deletes`];
//! by kind, VMs and containers before volumes and bridges, where nothing was recorded).
//!
//! [`make_plan`] plans everything the drivers see, and lists the running dependents of
//! its disruptive changes ([`Plan::restarts`], see [`dependent_restarts`]); the reconciler then
//! moves what it must not do (unconfirmed deletes, changes outside `--target`) into
//! [`Plan::skipped`], where rendering shows them and execution reports them without
//! touching the host.

mod delete_order;
mod panicked;
mod render;
mod restarts;
mod skipped;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use crate::contract::{Action, Change, Effect, FieldChange};
pub use delete_order::{RecordedDependencies, order_deletes};
pub use panicked::{PlanPanicked, panicked_while_planning};
pub use render::{render_json, render_skipped_text, render_text};
pub use restarts::{DependentRestart, Hold, dependent_restarts};
pub use skipped::{PruneWithheld, SkipReason, Skipped};

use crate::contract::{DriverError, Drivers, PlanContext};
use crate::load::Revision;
use crate::model::{Kind, Resource, ResourceId};

#[derive(Debug, Clone)]
pub struct Plan {
    pub revision: String,
    pub host: String,
    /// What apply carries out (and the resources that need nothing), in execution order.
    pub changes: Vec<Change>,
    /// What apply leaves alone on purpose, with why.
    pub skipped: Vec<Skipped>,
    /// Running dependents of disruptive changes: stopped before them and started again
    /// after, or kept running (their driver cannot stop them), with why. In dependency
    /// order.
    pub restarts: Vec<DependentRestart>,
    /// Deletes that wait for other deletes of [`Plan::changes`]: each one's dependents in
    /// the last applied graph, deleted first ([`order_deletes`]). A delete not listed
    /// waits for none.
    pub delete_after: BTreeMap<ResourceId, Vec<ResourceId>>,
}

/// Counts of changes by action.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub noop: usize,
    pub conflict: usize,
    pub unsupported: usize,
    /// Deletes left out (see [`Plan::skipped`]).
    #[serde(rename = "notPruned")]
    pub not_pruned: usize,
}

impl Plan {
    /// Whether applying would touch the host (or cannot converge it).
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    /// Whether applying can converge the host: no conflict, no kind without a driver.
    pub fn can_converge(&self) -> bool {
        self.changes
            .iter()
            .all(|c| !matches!(c.action, Action::Conflict | Action::Unsupported))
    }

    /// Drops the causes that are no longer among [`Plan::changes`] (left out by
    /// `--target` or the prune rules), and the dependents left without a cause.
    pub fn settle_restarts(&mut self) {
        let changing: BTreeMap<&ResourceId, &Change> = self
            .changes
            .iter()
            .filter(|c| c.is_disruptive())
            .map(|c| (&c.id, c))
            .collect();
        for restart in &mut self.restarts {
            restart.causes.retain(|(id, _)| changing.contains_key(id));
        }
        self.restarts.retain(|r| !r.causes.is_empty());
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            let counter = match change.action {
                Action::Create => &mut summary.create,
                Action::Update => &mut summary.update,
                Action::Replace => &mut summary.replace,
                Action::Delete => &mut summary.delete,
                Action::NoOp => &mut summary.noop,
                Action::Conflict => &mut summary.conflict,
                Action::Unsupported => &mut summary.unsupported,
            };
            *counter += 1;
        }
        summary.not_pruned = self.skipped.iter().filter(|s| s.is_delete()).count();
        summary
    }
}

/// Observes the host (one batch per driver, drivers concurrently) and diffs it against
/// the revision. Drivers see `context` with the revision attached (every kind, for this
/// host), so they can follow references. A driver that panics plans its kind's
/// resources as failed bugs ([`PlanPanicked`]); the other kinds are planned as usual.
pub async fn make_plan(
    revision: &Revision,
    host: &str,
    drivers: &Drivers,
    context: &PlanContext,
) -> Result<Plan, DriverError> {
    make_plan_focused(revision, host, drivers, context, None).await
}

/// [`make_plan`] for a targeted reconcile: only `focus` is diffed against the host
/// (`None`: everything). A kind with nothing in focus is not observed at all: its
/// declared resources are carried ([`Change::carried`]); a driver called for a kind may
/// carry what is out of focus too ([`PlanContext::in_focus`]).
pub async fn make_plan_focused(
    revision: &Revision,
    host: &str,
    drivers: &Drivers,
    context: &PlanContext,
    focus: Option<Arc<BTreeSet<ResourceId>>>,
) -> Result<Plan, DriverError> {
    let context = &context
        .clone()
        .with_revision(&revision.resources)
        .with_focus(focus);
    let mut by_kind: BTreeMap<Kind, Vec<Arc<Resource>>> = BTreeMap::new();
    for resource in &revision.resources {
        by_kind
            .entry(resource.kind())
            .or_default()
            .push(resource.clone());
    }
    let observations = Kind::all().into_iter().map(|kind| {
        let desired = by_kind.get(&kind).cloned().unwrap_or_default();
        async move {
            if !context.kind_in_focus(kind) {
                return Ok(desired.iter().map(Change::carried).collect());
            }
            match drivers.get(kind) {
                Some(driver) => {
                    panicked::plan_catching_panics(
                        kind,
                        &desired,
                        context,
                        driver.plan(&desired, context),
                    )
                    .await
                }
                None => Ok(desired
                    .iter()
                    .map(|resource| {
                        Change::new(resource.id(), Action::Unsupported)
                            .with_desired(resource.clone())
                            .with_reason(format!(
                                "this build has no {kind} driver yet; the resource cannot be applied"
                            ))
                    })
                    .collect()),
            }
        }
    });
    let mut changes: BTreeMap<ResourceId, Change> = BTreeMap::new();
    for result in futures::future::join_all(observations).await {
        for change in result? {
            changes.insert(change.id.clone(), change);
        }
    }
    let mut ordered = Vec::with_capacity(changes.len());
    for id in revision.graph.topological_order() {
        if let Some(change) = changes.remove(&id) {
            ordered.push(change);
        }
    }
    ordered.extend(changes.into_values());
    let restarts = dependent_restarts(&ordered, &revision.graph, drivers);
    let mut plan = Plan {
        revision: revision.id.clone(),
        host: host.to_owned(),
        changes: ordered,
        skipped: Vec::new(),
        restarts,
        delete_after: BTreeMap::new(),
    };
    // Nothing recorded yet: the kind order. The reconciler orders again with the store's
    // records once it has scoped the plan.
    order_deletes(&mut plan, &RecordedDependencies::new());
    Ok(plan)
}
