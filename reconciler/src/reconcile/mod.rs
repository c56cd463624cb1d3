//! The reconciler: load → plan → execute → record, in one place, for the CLI (`plan`,
//! `apply`, `status`) now and the controller (`gitvisor run`) later.
//!
//! A [`Reconciler`] holds the host's drivers (one per kind, [`Reconciler::connect`]; or
//! any set, [`Reconciler::new`], which tests use with fakes) and where the store lives.
//!
//! # Order of steps
//!
//! * [`Reconciler::load`]: read and validate the manifests of a [`Source`] (several paths
//!   form one revision). A rejected revision stops here, before the store is opened, so it
//!   leaves no trace on the host.
//! * [`Reconciler::plan`]: open the store read-only, observe the host (one batch per
//!   driver) and diff, then decide what is left out ([`scope`]: the prune rules and
//!   `--target`), and order the deletes by the dependencies the store recorded for each
//!   owned object ([`plan::order_deletes`]). Never writes anything.
//! * [`Reconciler::apply`]: open the store for writing (the lock keeps a second writer
//!   out), make the same plan the same way, record the write-ahead intents (with each
//!   object's dependencies in the revision's graph), execute
//!   (reporting each resource to a [`Progress`] callback as it finishes), observe the
//!   host again for what was applied (a targeted plan of those resources alone) and
//!   fail every change the host does not show ([`verify`]), then record
//!   the outcomes, statuses, the revision with its source, and events.
//! * [`Reconciler::status`]: the store's last revision and statuses, and (unless offline)
//!   the host's drift from the last applied revision.

mod error;
mod focus;
mod scope;
mod source;
mod status;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

pub use error::ReconcileError;
pub use focus::changed_between;
pub use scope::{Ownership, PlanOptions, PruneMode, scope};
pub use source::Source;
pub use status::{Basis, HostView, Live, RECENT_EVENTS, StatusReport};
pub use verify::verify;

use crate::contract::CancelToken;
use crate::drivers::{Drivers, PlanContext};
use crate::drivers::{HostSettings, connect_all};
use crate::execute::{self, ExecuteOptions, Progress, Report};
use crate::load::{ParseCache, Revision, RevisionErrors};
use crate::model::ResourceId;
use crate::plan::{self, Plan, RecordedDependencies};
use crate::state::{ReadOnlyStore, ResourceStatus, Store};

/// Default bound on concurrent driver calls.
pub const DEFAULT_CONCURRENCY: usize = execute::DEFAULT_CONCURRENCY;

/// Where state lives and how to act on this host.
#[derive(Debug, Clone)]
pub struct ReconcilerOptions {
    /// The state store's directory.
    pub state_dir: PathBuf,
    /// Runtime files (sockets, pid files).
    pub run_dir: PathBuf,
    /// Matched against `metadata.host`.
    pub host: String,
    /// How many resources may be changed at once (at least 1).
    pub concurrency: usize,
}

impl ReconcilerOptions {
    /// Where this gitvisor keeps its files, as the drivers take it.
    pub fn host_settings(&self) -> HostSettings {
        HostSettings {
            run_dir: self.run_dir.clone(),
            state_dir: self.state_dir.clone(),
        }
    }
}

/// What an apply did: the plan it carried out and each resource's result.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    pub plan: Plan,
    pub report: Report,
}

/// Reads and validates the manifests of `source` for `host`, before any reconciler (or
/// store, or driver) exists: a rejected revision leaves no trace.
pub fn load(source: &Source, host: &str) -> Result<Revision, RevisionErrors> {
    crate::load::load_revision_paths(source.paths(), host)
}

/// [`load`], reusing the parse of files unchanged since `cache`'s last load (the
/// controller loads its source again for every save).
pub fn load_cached(
    source: &Source,
    host: &str,
    cache: &mut ParseCache,
) -> Result<Revision, RevisionErrors> {
    crate::load::load_revision_paths_cached(source.paths(), host, Some(cache))
}

/// Loads, plans, applies and reports, with one set of drivers.
pub struct Reconciler {
    options: ReconcilerOptions,
    drivers: Arc<Drivers>,
}

impl Reconciler {
    /// A reconciler over `drivers` (kinds without one plan as `unsupported`).
    pub fn new(options: ReconcilerOptions, drivers: Drivers) -> Reconciler {
        Reconciler {
            options,
            drivers: Arc::new(drivers),
        }
    }

    /// A reconciler over this host's drivers. Call it inside a Tokio runtime (netlink).
    pub fn connect(options: ReconcilerOptions) -> Result<Reconciler, ReconcileError> {
        let drivers = connect_all(&options.host_settings()).map_err(ReconcileError::Connect)?;
        Ok(Reconciler::new(options, drivers))
    }

    pub fn options(&self) -> &ReconcilerOptions {
        &self.options
    }

    /// The drivers this reconciler plans and applies with (the controller starts their
    /// watches).
    pub fn drivers(&self) -> &Drivers {
        &self.drivers
    }

    /// Reads and validates the manifests of `source` for this host.
    pub fn load(&self, source: &Source) -> Result<Revision, RevisionErrors> {
        load(source, &self.options.host)
    }

    /// What [`Reconciler::apply`] would do now. Reads the store, never writes it.
    pub async fn plan(
        &self,
        revision: &Revision,
        source: &Source,
        options: &PlanOptions,
    ) -> Result<Plan, ReconcileError> {
        let store = ReadOnlyStore::open_async(&self.options.state_dir).await?;
        let targeted = options.changed.is_some();
        let (ownership, statuses) = store
            .run_blocking("read ownership", move |store| {
                let ownership = Ownership {
                    owned: store.owned()?,
                    revisions: store.revisions()?,
                };
                let statuses = if targeted {
                    store.statuses()?
                } else {
                    BTreeMap::new()
                };
                Ok((ownership, statuses))
            })
            .await?;
        let focus = focused(revision, options, &ownership, &statuses);
        self.scoped_plan(revision, source, options, &ownership, focus)
            .await
    }

    /// Converges the host to `revision`: the plan [`Reconciler::plan`] shows, carried out.
    pub async fn apply(
        &self,
        revision: &Revision,
        source: &Source,
        options: &PlanOptions,
        progress: Progress,
        cancel: CancelToken,
    ) -> Result<ApplyOutcome, ReconcileError> {
        let timer = std::time::Instant::now();
        let store = Store::open_async(&self.options.state_dir).await?;
        let targeted = options.changed.is_some();
        let (ownership, statuses) = store
            .run_blocking("read ownership", move |store| {
                let ownership = Ownership {
                    owned: store.owned()?,
                    revisions: store.revisions()?,
                };
                let statuses = if targeted {
                    store.statuses()?
                } else {
                    BTreeMap::new()
                };
                Ok((ownership, statuses))
            })
            .await?;
        let opened = timer.elapsed();
        let focus = focused(revision, options, &ownership, &statuses);
        let plan = self
            .scoped_plan(revision, source, options, &ownership, focus)
            .await?;
        let planned = timer.elapsed();
        execute::record_intents_async(&store, &plan, &revision.graph).await?;
        let mut report = execute::execute_with(
            &plan,
            &revision.graph,
            self.drivers.clone(),
            ExecuteOptions::new(self.options.concurrency)
                .with_cancel(cancel)
                .with_events(progress),
        )
        .await;
        let executed = timer.elapsed();
        // Only what was applied is looked at again: the rest was just observed and
        // left alone, and a kind with nothing applied is not observed a second time.
        let applied: BTreeSet<ResourceId> = report
            .results
            .iter()
            .filter(|step| step.result == execute::ResultKind::Applied)
            .map(|step| step.id.clone())
            .collect();
        if !applied.is_empty() {
            let owned = store
                .run_blocking("read owned records", Store::owned)
                .await?;
            let context = PlanContext::new(owned.into_keys());
            let again = plan::make_plan_focused(
                revision,
                &self.options.host,
                &self.drivers,
                &context,
                Some(Arc::new(applied)),
            )
            .await;
            verify(&mut report, again);
        }
        let verified = timer.elapsed();
        execute::record_report_async(
            &store,
            &report,
            &revision.graph,
            &self.drivers.kinds(),
            source.id(),
        )
        .await?;
        tracing::debug!(
            opened_ms = opened.as_secs_f64() * 1e3,
            planned_ms = planned.as_secs_f64() * 1e3,
            executed_ms = executed.as_secs_f64() * 1e3,
            verified_ms = verified.as_secs_f64() * 1e3,
            recorded_ms = timer.elapsed().as_secs_f64() * 1e3,
            "apply timings (since the start of the apply)"
        );
        Ok(ApplyOutcome { plan, report })
    }

    async fn scoped_plan(
        &self,
        revision: &Revision,
        source: &Source,
        options: &PlanOptions,
        ownership: &Ownership,
        focus: Option<Arc<BTreeSet<ResourceId>>>,
    ) -> Result<Plan, ReconcileError> {
        let context = PlanContext::new(ownership.owned.keys().cloned());
        let plan =
            plan::make_plan_focused(revision, &self.options.host, &self.drivers, &context, focus)
                .await
                .map_err(ReconcileError::Observe)?;
        let options = options.under_policy(revision.prune_policy.as_deref());
        let mut plan = scope(plan, &revision.graph, ownership, source.id(), &options)?;
        let recorded: RecordedDependencies = ownership
            .owned
            .iter()
            .map(|(id, record)| (id.clone(), record.depends_on.clone()))
            .collect();
        plan::order_deletes(&mut plan, &recorded);
        Ok(plan)
    }

    async fn make_plan(
        &self,
        revision: &Revision,
        context: &PlanContext,
    ) -> Result<Plan, ReconcileError> {
        plan::make_plan(revision, &self.options.host, &self.drivers, context)
            .await
            .map_err(ReconcileError::Observe)
    }
}

/// The focus of a targeted reconcile ([`PlanOptions::changed`]), or `None` for a full
/// one.
fn focused(
    revision: &Revision,
    options: &PlanOptions,
    ownership: &Ownership,
    statuses: &BTreeMap<ResourceId, ResourceStatus>,
) -> Option<Arc<BTreeSet<ResourceId>>> {
    let changed = options.changed.as_ref()?;
    let focus = focus::focus(revision, changed, &ownership.owned, statuses);
    tracing::debug!(
        changed = changed.len(),
        focus = focus.len(),
        declared = revision.resources.len(),
        "targeted reconcile"
    );
    Some(Arc::new(focus))
}
