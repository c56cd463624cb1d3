//! One reconcile of the controller, from the reasons gathered to the status it leaves.
//!
//! Steps, in order:
//! 1. Forget holds a person or a new revision lifts: a `sync`/SIGHUP forgets every hold,
//!    a resync releases those waiting for a person ([`super::retry`]).
//! 2. Read the source when the reasons call for it ([`Controller::fetch`]): a directory
//!    is loaded (its content hash says whether it changed); a git source is fetched and,
//!    for a new commit only, verified, checked out and loaded. A revision that fails
//!    (validation, signature) is rejected whole: the host stays at the last good
//!    revision, and the rejection shows in status, events, logs and metrics until a good
//!    revision replaces it. A source that cannot be read keeps the last good revision too.
//! 3. Apply the last good revision through the library
//!    ([`crate::reconcile::Reconciler::apply`], the same plan and execution as
//!    `gitvisor apply`, pruning within this source), with the held resources left out;
//!    each finished resource becomes an event as it finishes. A reconcile of resources
//!    only (a retry, a restart, a watch's event: [`Scope::Resources`]) applies them as
//!    `gitvisor apply --target` would, with what they depend on and what depends on
//!    them, and leaves the rest for their own entries or the resync.
//! 4. Record the failures for their retries (entries of the scheduler), count drift
//!    repairs and failures, and replace the status snapshot from the store.
//!
//! Nothing here runs twice at once: the loop ([`super::run`]) awaits each reconcile, and
//! takes what falls due meanwhile from the scheduler ([`super::scheduler`]) afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant as StdInstant;
use tracing::Instrument;

use tokio::time::Instant;

use super::metrics::ReconcileResult;
use super::retry::{Retries, backoff};
use super::scheduler::{Cause, Due, Key, Scheduler, Scope};
use super::shared::Shared;
use super::status::{Problem, ReconcileRun, Rejected, ResourceView};
use super::trigger::{Reasons, SyncOutcome};
use crate::contract::{CancelToken, HostEvent, chain};
use crate::execute::{Progress, ResultKind, RunEvent};
use crate::load::{ParseCache, Revision};
use crate::model::ResourceId;
use crate::plan::PruneWithheld;
use crate::reconcile::{self, PlanOptions, Reconciler, Source};
use crate::source::GitSource;
use crate::state::{EventLevel, ReadOnlyStore, now_unix};

/// Where the controller's revisions come from.
pub enum Origin {
    Dir(PathBuf),
    Git(GitSource),
}

impl Origin {
    /// The source as status shows it.
    pub fn describe(&self) -> String {
        match self {
            Origin::Dir(dir) => dir.display().to_string(),
            Origin::Git(git) => git.id(),
        }
    }
}

/// The revision the host is kept at.
struct Current {
    revision: Revision,
    /// The resources `revision` declares for this host, as the scheduler and the targets
    /// of a reconcile ask it (built once per revision, not per event).
    declared: BTreeSet<ResourceId>,
    source: Source,
    /// The commit, for a git source.
    commit: Option<String>,
}

/// What reading the source gave.
enum Fetched {
    New(Current),
    /// The source still has the revision applied (or the one already rejected).
    Unchanged,
    Rejected {
        revision: Option<String>,
        errors: Vec<String>,
    },
    Failed(String),
}

pub struct Controller {
    reconciler: Reconciler,
    origin: Origin,
    shared: Arc<Shared>,
    current: Option<Current>,
    retries: Retries,
    /// Every "later": retries, restart backoffs, timers, watches' events.
    scheduler: Scheduler,
    /// How many reconciles in a row could not apply at all (store locked, host
    /// unreadable); the next try is a revision entry of the scheduler.
    stalled: u32,
    first: bool,
    /// The revision and the objects of the last "prune withheld" event, so that it is
    /// told once per revision rather than at every resync.
    withheld_announced: Option<(String, Vec<String>)>,
    /// What the source's files parsed to at the last load, for the next one.
    parse_cache: Arc<std::sync::Mutex<ParseCache>>,
}

impl Controller {
    pub fn new(reconciler: Reconciler, origin: Origin, shared: Arc<Shared>) -> Controller {
        Controller {
            reconciler,
            origin,
            shared,
            current: None,
            retries: Retries::default(),
            scheduler: Scheduler::default(),
            stalled: 0,
            first: true,
            withheld_announced: None,
            parse_cache: Arc::default(),
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The revision the host is kept at, if one was read.
    pub fn revision_id(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.revision.id.as_str())
    }

    /// The queue of every "later".
    pub fn scheduler(&mut self) -> &mut Scheduler {
        &mut self.scheduler
    }

    /// One event of a driver's watch, as an entry of the scheduler for what the current
    /// revision declares ([`Scheduler::host_event`]); before any revision, nothing.
    pub fn host_event(&mut self, event: HostEvent, now: Instant) {
        if let Some(current) = &self.current {
            self.scheduler.host_event(event, &current.declared, now);
        }
    }

    /// One reconcile for what fell due; see the module docs for the steps.
    /// Reasons alone reconcile the whole revision.
    pub async fn reconcile(&mut self, due: impl Into<Due>, cancel: &CancelToken) -> SyncOutcome {
        let Due { reasons, scope } = due.into();
        let started = StdInstant::now();
        let started_unix = now_unix();
        self.shared.with_status(|s| s.reconciling = true);
        let first = std::mem::replace(&mut self.first, false);
        if reasons.asked() {
            self.forget_holds();
        } else if reasons.resync {
            self.retries.release_waiting();
        }

        let read_source = first
            || reasons.source
            || reasons.asked()
            || (reasons.resync && matches!(self.origin, Origin::Dir(_)));
        let mut new_revision = false;
        // What a new revision changed since the one the host is kept at, for a targeted
        // reconcile of it; `None`: apply it whole.
        let mut changed: Option<BTreeSet<ResourceId>> = None;
        let fetched = if read_source {
            // A fetch can wait on the network for a while; SIGTERM does not wait for it
            // (dropping it kills git).
            tokio::select! {
                fetched = self.fetch() => Some(fetched),
                _ = cancel.cancelled() => None,
            }
        } else {
            None
        };
        tracing::debug!(
            read_source,
            fetched_ms = started.elapsed().as_secs_f64() * 1e3,
            "source read"
        );
        if let Some(fetched) = fetched {
            match fetched {
                Fetched::New(current) => {
                    self.shared.events.push(
                        EventLevel::Info,
                        None,
                        Some(&current.revision.id),
                        format!(
                            "new revision {} from {} ({} resources for this host)",
                            current.revision.id,
                            self.origin.describe(),
                            current.revision.resources.len()
                        ),
                    );
                    // A resync or a person's sync looks at everything; so does the first
                    // reconcile, which has nothing to compare with.
                    if !first && !reasons.resync && !reasons.asked() {
                        changed = self.current.as_ref().map(|old| {
                            reconcile::changed_between(&old.revision, &current.revision)
                        });
                    }
                    self.current = Some(current);
                    self.accept();
                    self.forget_holds();
                    new_revision = true;
                }
                Fetched::Unchanged => {}
                Fetched::Rejected { revision, errors } => self.reject(revision, errors),
                Fetched::Failed(message) => {
                    self.shared.metrics.fetch_failed();
                    self.shared.events.push(
                        EventLevel::Warning,
                        None,
                        self.current.as_ref().map(|c| c.revision.id.as_str()),
                        format!(
                            "cannot read the source {}: {message}; the host stays at the last good revision, trying again at the next poll",
                            self.origin.describe()
                        ),
                    );
                    self.shared.with_status(|s| {
                        s.source_error = Some(Problem {
                            unix: now_unix(),
                            message,
                        })
                    });
                }
            }
        }

        let apply = !cancel.is_cancelled()
            && (first
                || new_revision
                || reasons.resync
                || reasons.retry
                || reasons.container
                || reasons.watch
                || reasons.asked());
        // A new revision is applied whole, whatever brought it.
        let scope = if first || new_revision {
            Scope::Revision
        } else {
            scope
        };
        let run = match (self.current.take(), apply) {
            (Some(current), true) => {
                let run = self
                    .apply(&current, reasons, &scope, new_revision, changed, cancel)
                    .await;
                self.current = Some(current);
                let only_host = reasons
                    == Reasons {
                        watch: true,
                        ..Reasons::default()
                    };
                let news = run.changed > 0 || run.failed > 0 || run.deferred > 0;
                if only_host && !news && run.error.is_none() {
                    // A watch's event that found nothing to do (often the echo of this
                    // controller's own last apply) is not news: the last run stands, as
                    // after a quiet poll.
                    self.shared
                        .with_status(|s| s.last_reconcile.clone())
                        .unwrap_or(run)
                } else {
                    run
                }
            }
            (None, _) => {
                self.shared.metrics.reconciled(
                    started.elapsed().as_secs_f64(),
                    ReconcileResult::Error,
                    now_unix() as f64,
                );
                ReconcileRun {
                    reasons,
                    started_unix,
                    seconds: started.elapsed().as_secs_f64(),
                    revision: None,
                    converged: false,
                    changed: 0,
                    failed: 0,
                    deferred: 0,
                    error: Some(
                        "no valid revision has been read from the source yet; the host is left as it is"
                            .to_owned(),
                    ),
                }
            }
            (Some(current), false) => {
                // Nothing new: the last run's outcome stands as it was, its time included
                // (this poll's few milliseconds beside that run's start and changes would
                // contradict the event that reported it).
                let run = self.last_run_or_quiet(reasons, started_unix, &current.revision.id);
                self.current = Some(current);
                run
            }
        };
        let outcome = self.refresh(run);
        tracing::debug!(
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "reconcile done"
        );
        outcome
    }

    /// The last run shown, as it was (a reconcile that had nothing to do is not news), or
    /// a quiet converged run of `revision` when none has been shown yet.
    fn last_run_or_quiet(
        &self,
        reasons: Reasons,
        started_unix: u64,
        revision: &str,
    ) -> ReconcileRun {
        let last = self.shared.with_status(|s| s.last_reconcile.clone());
        last.unwrap_or(ReconcileRun {
            reasons,
            started_unix,
            seconds: 0.0,
            revision: Some(revision.to_owned()),
            converged: true,
            changed: 0,
            failed: 0,
            deferred: 0,
            error: None,
        })
    }

    /// Forgets every hold and its retry (a new revision, or a person asked), and a
    /// stalled reconcile's backoff: the reconcile starting now tries everything.
    fn forget_holds(&mut self) {
        self.retries.clear();
        self.scheduler.forget_resources(Cause::Retry);
        self.scheduler.forget(&Key::Revision, Cause::Retry);
        self.stalled = 0;
    }

    /// Steps 3 and 4.
    async fn apply(
        &mut self,
        current: &Current,
        reasons: Reasons,
        scope: &Scope,
        new_revision: bool,
        changed: Option<BTreeSet<ResourceId>>,
        cancel: &CancelToken,
    ) -> ReconcileRun {
        let started = StdInstant::now();
        let started_unix = now_unix();
        let now = Instant::now();
        // A watch's reconcile is targeted like a saved change: only what the watch named
        // (and what depends on it, what is not converged, what is owned and undeclared:
        // `reconcile/focus.rs`) is observed and diffed again; the rest is carried.
        let changed = match scope {
            Scope::Resources(ids) if changed.is_none() => Some(ids.iter().cloned().collect()),
            _ => changed,
        };
        let options = PlanOptions {
            held: self.retries.held(now),
            targets: targets(current, scope),
            changed,
            ..PlanOptions::default()
        };
        if let Scope::Resources(_) = scope
            && options.targets.is_empty()
        {
            // Nothing it names is declared any more: nothing to do.
            return self.last_run_or_quiet(reasons, started_unix, &current.revision.id);
        }
        let revision_id = current.revision.id.clone();
        let progress = progress(self.shared.clone(), revision_id.clone());
        let result = self
            .reconciler
            .apply(
                &current.revision,
                &current.source,
                &options,
                progress,
                cancel.clone(),
            )
            .instrument(tracing::info_span!("reconcile", revision = %revision_id))
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                self.stalled += 1;
                let wait = backoff(self.stalled, fastrand::f64());
                self.scheduler
                    .at(Key::Revision, Cause::Retry, Instant::now() + wait);
                let message = chain(&error);
                self.shared.events.push(
                    EventLevel::Error,
                    None,
                    Some(&revision_id),
                    format!(
                        "reconcile failed: {message}; trying again in {}",
                        humantime::format_duration(std::time::Duration::from_secs(
                            wait.as_secs().max(1)
                        ))
                    ),
                );
                self.shared
                    .metrics
                    .reconciled(seconds, ReconcileResult::Error, now_unix() as f64);
                return ReconcileRun {
                    reasons,
                    started_unix,
                    seconds,
                    revision: Some(revision_id),
                    converged: false,
                    changed: 0,
                    failed: 0,
                    deferred: 0,
                    error: Some(message),
                };
            }
        };
        self.stalled = 0;
        self.scheduler.forget(&Key::Revision, Cause::Retry);
        self.report_withheld(&revision_id, outcome.plan.prune_withheld());
        let report = &outcome.report;
        let changed: Vec<&ResourceId> = report
            .results
            .iter()
            .filter(|r| r.action.is_change() && r.result == ResultKind::Applied)
            .map(|r| &r.id)
            .collect();
        if !new_revision {
            // Changes to a revision already applied, other than retries (also those a
            // sync or a resync released: `Retries::is_retry`) and a kind's own policy
            // at work (a dead container restarted, told by the container's events): the
            // host drifted.
            let drivers = self.reconciler.drivers();
            let policy_restarts: Vec<&ResourceId> = outcome
                .plan
                .changes
                .iter()
                .filter(|change| {
                    drivers
                        .get(change.id.kind)
                        .is_some_and(|driver| driver.is_policy_at_work(change))
                })
                .map(|change| &change.id)
                .collect();
            let repairs = changed
                .iter()
                .filter(|id| !self.retries.is_retry(id) && !policy_restarts.contains(id))
                .count();
            if repairs > 0 {
                self.shared.metrics.drift_repaired(repairs as u64);
                self.shared.events.push(
                    EventLevel::Warning,
                    None,
                    Some(&revision_id),
                    format!(
                        "drift repaired: {repairs} resource{} differed from revision {revision_id} and {} put back",
                        if repairs == 1 { "" } else { "s" },
                        if repairs == 1 { "was" } else { "were" }
                    ),
                );
            }
        }
        for failure in report.failures() {
            if let Some(class) = failure.class {
                self.shared.metrics.failed(failure.id.kind, class);
            }
        }
        self.retries.record(report, Instant::now(), fastrand::f64);
        for (id, due) in self.retries.dues() {
            self.scheduler
                .at(Key::Resource(id.clone()), Cause::Retry, due);
        }
        let failed = report.failures().count();
        let deferred = report.results.iter().filter(|r| r.deferred).count();
        let cancelled = report.cancelled().next().is_some();
        let converged = failed == 0 && deferred == 0;
        self.shared.metrics.reconciled(
            seconds,
            if cancelled {
                ReconcileResult::Cancelled
            } else if converged {
                ReconcileResult::Converged
            } else {
                ReconcileResult::NotConverged
            },
            now_unix() as f64,
        );
        self.shared
            .metrics
            .applied(&revision_id, current.source.id());
        if !changed.is_empty() || failed > 0 {
            self.shared.events.push(
                if failed > 0 {
                    EventLevel::Warning
                } else {
                    EventLevel::Info
                },
                None,
                Some(&revision_id),
                format!(
                    "reconciled revision {revision_id} ({}): {} changed, {failed} not converged, {deferred} deferred, in {seconds:.2} s",
                    reasons.describe(),
                    changed.len()
                ),
            );
        }
        ReconcileRun {
            reasons,
            started_unix,
            seconds,
            revision: Some(revision_id),
            converged,
            changed: changed.len(),
            failed,
            deferred,
            error: None,
        }
    }

    /// Deletes the plan withheld (an emptied repository): in status and the gauge after
    /// every reconcile, and as a warning event once per revision (and again when what is
    /// withheld changes), so that a host kept as it was never reads as plain "converged".
    fn report_withheld(&mut self, revision: &str, withheld: Option<PruneWithheld>) {
        self.shared
            .metrics
            .set_prune_withheld(withheld.as_ref().map_or(0, |w| w.count));
        let announced = withheld
            .as_ref()
            .map(|w| (revision.to_owned(), w.resources.clone()));
        if let Some(withheld) = &withheld
            && self.withheld_announced != announced
        {
            self.shared.events.push(
                EventLevel::Warning,
                None,
                Some(revision),
                format!("revision {revision}: {withheld}"),
            );
        }
        self.withheld_announced = announced;
        self.shared.with_status(|s| s.prune_withheld = withheld);
    }

    /// Step 2.
    async fn fetch(&self) -> Fetched {
        let host = self.reconciler.options().host.clone();
        match &self.origin {
            Origin::Dir(dir) => {
                let source = Source::from_paths(std::slice::from_ref(dir));
                match load(source, host, None, self.parse_cache.clone()).await {
                    Err(message) => Fetched::Failed(message),
                    Ok(Err(errors)) => Fetched::Rejected {
                        revision: None,
                        errors,
                    },
                    Ok(Ok(current)) => {
                        if self
                            .current
                            .as_ref()
                            .is_some_and(|c| c.revision.id == current.revision.id)
                        {
                            self.accept();
                            Fetched::Unchanged
                        } else {
                            Fetched::New(current)
                        }
                    }
                }
            }
            Origin::Git(git) => {
                let commit = match git.fetch().await {
                    Ok(commit) => commit,
                    Err(error) => return Fetched::Failed(chain(&error)),
                };
                self.shared.with_status(|s| s.source_error = None);
                if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.commit.as_deref() == Some(&commit))
                {
                    self.accept();
                    return Fetched::Unchanged;
                }
                let rejected = self.shared.with_status(|s| {
                    s.rejected
                        .as_ref()
                        .is_some_and(|r| r.revision.as_deref() == Some(&commit))
                });
                if rejected {
                    return Fetched::Unchanged;
                }
                let checkout = match git.checkout(&commit).await {
                    Ok(checkout) => checkout,
                    Err(error) if error.rejects_revision() => {
                        return Fetched::Rejected {
                            revision: Some(commit),
                            errors: vec![chain(&error)],
                        };
                    }
                    Err(error) => return Fetched::Failed(chain(&error)),
                };
                let source = Source::with_id(&[checkout.dir], git.id());
                let root = git.checkout_dir().to_owned();
                match load(source, host, Some(root), self.parse_cache.clone()).await {
                    Err(message) => Fetched::Failed(message),
                    Ok(Err(errors)) => Fetched::Rejected {
                        revision: Some(commit),
                        errors,
                    },
                    Ok(Ok(mut current)) => {
                        current.revision.id = commit.clone();
                        current.commit = Some(commit);
                        Fetched::New(current)
                    }
                }
            }
        }
    }

    /// The source is readable and not rejected (again).
    fn accept(&self) {
        let was_rejected = self.shared.with_status(|s| {
            s.source_error = None;
            s.rejected.take().is_some()
        });
        self.shared.metrics.accepted();
        if was_rejected && let Some(current) = &self.current {
            self.shared.events.push(
                EventLevel::Info,
                None,
                Some(&current.revision.id),
                format!(
                    "the source is back at revision {}; the rejection is cleared",
                    current.revision.id
                ),
            );
        }
    }

    fn reject(&self, revision: Option<String>, errors: Vec<String>) {
        let repeated = self.shared.with_status(|s| {
            s.source_error = None;
            s.rejected
                .as_ref()
                .is_some_and(|r| r.revision == revision && r.errors == errors)
        });
        self.shared.metrics.rejected(!repeated);
        if repeated {
            return;
        }
        let kept = match &self.current {
            Some(current) => format!("the host stays at revision {}", current.revision.id),
            None => "no revision is applied until a valid one arrives".to_owned(),
        };
        self.shared.events.push(
            EventLevel::Error,
            None,
            revision.as_deref(),
            format!(
                "revision {} rejected ({} error{}); {kept}: {}",
                revision.as_deref().unwrap_or("of the directory"),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                errors.join("; ")
            ),
        );
        self.shared.with_status(|s| {
            s.rejected = Some(Rejected {
                revision,
                unix: now_unix(),
                errors,
            })
        });
    }

    /// Step 4's snapshot: the store's statuses and last revision, each resource's retry.
    fn refresh(&self, run: ReconcileRun) -> SyncOutcome {
        let state_dir = &self.reconciler.options().state_dir;
        let stored = ReadOnlyStore::open(state_dir)
            .and_then(|store| Ok((store.last_revision()?, store.statuses()?)));
        let now = Instant::now();
        let (applied, statuses) = match stored {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "cannot read the state store for the status snapshot");
                (None, BTreeMap::new())
            }
        };
        self.shared
            .metrics
            .set_resources(statuses.iter().map(|(id, status)| (id.kind, status.state)));
        let resources: Vec<ResourceView> = statuses
            .into_iter()
            .map(|(id, status)| ResourceView {
                retry: self.retries.view(&id, now),
                live: None,
                kind: id.kind,
                name: id.name.to_string(),
                state: status.state,
                message: status.message,
                revision: status.revision,
                updated_unix: status.updated_unix,
            })
            .collect();
        self.shared.with_status(|s| {
            s.reconciling = false;
            s.applied = applied;
            s.resources = resources;
            let live = std::mem::take(&mut s.live);
            s.set_live(live);
            s.last_reconcile = Some(run.clone());
            SyncOutcome {
                revision: run.revision.clone(),
                converged: run.converged && s.rejected.is_none() && s.source_error.is_none(),
                rejected: s.rejected.as_ref().map(|r| r.errors.join("; ")),
                source_error: s.source_error.as_ref().map(|p| p.message.clone()),
                summary: summary(&run, s),
            }
        })
    }
}

/// The targets of a reconcile of `scope`: none for the whole revision; for resources,
/// those the revision still declares and, transitively, what depends on them (a bridge
/// put back may need its dependents' links again). The plan adds what they depend on.
fn targets(current: &Current, scope: &Scope) -> Vec<ResourceId> {
    let Scope::Resources(ids) = scope else {
        return Vec::new();
    };
    let mut targets: BTreeSet<ResourceId> = BTreeSet::new();
    for id in ids.iter().filter(|id| current.declared.contains(id)) {
        targets.insert(id.clone());
        targets.extend(current.revision.graph.transitive_dependents(id));
    }
    targets.retain(|id| current.declared.contains(id));
    targets.into_iter().collect()
}

/// The one-line summary of a reconcile, for `STATUS=` and `gitvisor sync`.
fn summary(run: &ReconcileRun, status: &super::status::ControllerStatus) -> String {
    let ready = status
        .resources
        .iter()
        .filter(|r| r.state == crate::state::ResourceState::Ready)
        .count();
    let mut line = match (&run.revision, &run.error) {
        (_, Some(error)) => format!("not applied: {error}"),
        (Some(revision), None) => format!(
            "revision {revision}: {ready}/{} ready, {} changed, {} not converged, {} deferred",
            status.resources.len(),
            run.changed,
            run.failed,
            run.deferred
        ),
        (None, None) => "no revision".to_owned(),
    };
    if let Some(rejected) = &status.rejected {
        line.push_str(&format!(
            "; newest revision {} rejected",
            rejected.revision.as_deref().unwrap_or("of the directory")
        ));
    }
    if status.source_error.is_some() {
        line.push_str("; source unreadable");
    }
    if let Some(withheld) = &status.prune_withheld {
        line.push_str(&format!(
            "; prune withheld: {} undeclared resource{} kept",
            withheld.count,
            if withheld.count == 1 { "" } else { "s" }
        ));
    }
    line
}

/// Loads `source` off the async threads. `Err`: the load task itself failed. Errors in
/// files below `root` (a git checkout) name them relative to it, as in the repository.
async fn load(
    source: Source,
    host: String,
    root: Option<PathBuf>,
    cache: Arc<std::sync::Mutex<ParseCache>>,
) -> Result<Result<Current, Vec<String>>, String> {
    tokio::task::spawn_blocking(move || {
        let loaded = match cache.lock() {
            Ok(mut cache) => reconcile::load_cached(&source, &host, &mut cache),
            // A load that panicked left the cache in doubt: drop it.
            Err(poisoned) => {
                let mut fresh = poisoned.into_inner();
                *fresh = ParseCache::new();
                cache.clear_poison();
                reconcile::load_cached(&source, &host, &mut fresh)
            }
        };
        match loaded {
            Ok(revision) => Ok(Current {
                declared: revision.resources.iter().map(|r| r.id()).collect(),
                revision,
                source,
                commit: None,
            }),
            Err(errors) => Err(errors
                .diagnostics
                .into_iter()
                .map(|mut diagnostic| {
                    if let Some(root) = &root {
                        diagnostic.file = in_repository(root, &diagnostic.file);
                    }
                    diagnostic.to_string()
                })
                .collect()),
        }
    })
    .await
    .map_err(|error| format!("the manifest loader stopped: {error}"))
}

/// `file` as the repository names it: relative to the checkout `root`, and `.` for the
/// root itself (an error about the whole checkout, such as an empty one, would otherwise
/// name an empty file: `:1:1: …`).
fn in_repository(root: &std::path::Path, file: &std::path::Path) -> PathBuf {
    match file.strip_prefix(root) {
        Ok(relative) if relative.as_os_str().is_empty() => PathBuf::from("."),
        Ok(relative) => relative.to_owned(),
        Err(_) => file.to_owned(),
    }
}

/// Each finished resource as an event, as it finishes.
fn progress(shared: Arc<Shared>, revision: String) -> Progress {
    Arc::new(move |event| match event {
        RunEvent::Started { plan } => {
            let count = plan.changes.iter().filter(|c| c.action.is_change()).count();
            if count > 0 {
                shared.events.push(
                    EventLevel::Info,
                    None,
                    Some(&revision),
                    format!(
                        "applying revision {revision}: {count} change{}",
                        if count == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        RunEvent::Finished(step) => {
            let (level, message) = match &step.result {
                ResultKind::Applied => (EventLevel::Info, format!("{} applied", step.action)),
                ResultKind::Unchanged | ResultKind::Skipped(_) => return,
                ResultKind::Failed(_) => (
                    EventLevel::Error,
                    match step.class {
                        Some(class) => format!("{} ({class})", step.failure().unwrap_or_default()),
                        None => step.failure().unwrap_or_default(),
                    },
                ),
                ResultKind::Blocked(_) | ResultKind::Cancelled => {
                    (EventLevel::Warning, step.failure().unwrap_or_default())
                }
            };
            shared
                .events
                .push(level, Some(&step.id), Some(&revision), message);
        }
    })
}
