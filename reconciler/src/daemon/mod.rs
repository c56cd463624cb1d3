//! The controller, `gitvisor run`: the GitOps loop of Flux or Argo CD for one host,
//! without Kubernetes, run as a systemd service.
//!
//! # What starts, in order
//!
//! 1. SIGTERM/SIGINT handlers ([`crate::execute::cancel_on_shutdown_signals`]: the first
//!    signal lets the running reconcile stop at its next safe point and the loop exit; a
//!    second exits at once) and SIGHUP (reload: fetch again and forget every hold).
//! 2. The local API on `<run-dir>/controller.sock` ([`crate::daemon::api`]) and, when asked,
//!    the metrics endpoint, so `gitvisor status` answers from the first moment.
//! 3. The triggers ([`trigger`]): the directory watch, the API and SIGHUP; the
//!    watchdog pinger when systemd asks for one; and every driver's watch
//!    ([`crate::contract::Driver::watch`]), whose events arrive on one channel: a
//!    resource that may have changed (a scheduler entry, debounced), one due later (a
//!    container's restart backoff), what people should hear (a container's health
//!    verdicts, exits and restarts, into the event log) and how objects are doing now
//!    (status's `live`).
//! 4. The loop: everything that asks for a reconcile becomes an entry of one queue
//!    ([`scheduler`]): the first reconcile, file events (debounced: quiet for 10 ms
//!    after a file closed after writing, 100 ms after any other file event, at most
//!    500 ms), the git poll and the
//!    resync (re-armed each time they are served), retries, restart backoffs and the
//!    drivers' events (debounced the same way). The loop sleeps until the next entry
//!    falls due or something arrives, then runs one reconcile at a time
//!    ([`controller`]) for what fell due: the whole revision, or only the resources
//!    named. `READY=1` goes to systemd after the first reconcile attempt, `STATUS=`
//!    after every one.
//!
//! Between reconciles nothing runs: the loop sleeps on the triggers, the scheduler's next
//! entry, the drivers' watches, the container watch (inotify and pidfds) and the signals;
//! there is no polling other than the git poll the user configured.

pub mod api;
pub mod controller;
mod error;
pub mod events;
pub mod metrics;
pub mod retry;
pub mod scheduler;
pub mod sd_notify;
pub mod shared;
pub mod status;
pub mod trigger;
pub mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

pub use controller::{Controller, Origin};
pub use error::DaemonError;
pub use shared::Shared;
pub use status::ControllerStatus;
pub use trigger::{Reasons, SyncOutcome, Trigger};

use crate::contract::{HostEvent, Severity};
use crate::drivers::HostSettings;
use crate::reconcile::Reconciler;
use crate::source::DirWatcher;
use crate::source::watch::SourceChange;
use crate::state::EventLevel;
use crate::state::ReadOnlyStore;
use scheduler::{Cause, Key};

/// Default time between resyncs.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// Default time between polls of a git source.
pub const DEFAULT_POLL: Duration = Duration::from_secs(60);
/// How many of the store's events seed the event log.
const SEED_EVENTS: usize = 100;

/// How the controller runs.
pub struct ControllerOptions {
    pub origin: Origin,
    /// The git ref followed (for status).
    pub reference: Option<String>,
    pub poll: Duration,
    pub resync: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// The grace period of the automatic image-store collection; `None`: off.
    pub image_gc_after: Option<Duration>,
}

/// How often the controller collects the image store (when `image_gc_after` is set).
const IMAGE_GC_EVERY: Duration = Duration::from_secs(3600);

/// Runs the controller until SIGTERM or SIGINT. Call it inside a Tokio runtime.
pub async fn run(reconciler: Reconciler, options: ControllerOptions) -> Result<(), DaemonError> {
    let cancel = crate::execute::cancel_on_shutdown_signals().map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let notifier = sd_notify::Notifier::from_env();
    let settings = reconciler.options().clone();

    let shared = Arc::new(
        Shared::new(ControllerStatus::starting(
            options.origin.describe(),
            options.reference.clone(),
            settings.host.clone(),
            options.resync,
            matches!(options.origin, Origin::Git(_)).then_some(options.poll),
        ))
        .with_status_tables(
            settings.run_dir.clone(),
            crate::drivers::status_tables().copied().collect(),
        ),
    );
    if let Ok(store) = ReadOnlyStore::open(&settings.state_dir)
        && let Ok(mut history) = store.events(SEED_EVENTS)
    {
        history.reverse();
        shared.events.seed(history);
    }

    let socket = crate::daemon::api::socket_path(&settings.run_dir);
    let api = crate::daemon::api::serve(&socket, shared.clone())
        .await
        .map_err(|source| DaemonError::Api {
            path: socket.clone(),
            source,
        })?;
    if let Some(address) = options.metrics_listen {
        let bound = crate::daemon::api::serve_metrics(address, shared.clone())
            .await
            .map_err(|source| DaemonError::Metrics { address, source })?;
        tracing::info!(address = %bound, "serving Prometheus metrics on http://{bound}/metrics");
    }

    let _watch: Option<DirWatcher> = match &options.origin {
        Origin::Dir(dir) => {
            let shared = shared.clone();
            Some(crate::source::watch::watch(dir, move |change| {
                shared.triggers.fire(match change {
                    SourceChange::Changed => Trigger::Source,
                    SourceChange::Written => Trigger::Written,
                })
            })?)
        }
        Origin::Git(_) => None,
    };
    if let Some(every) = notifier.watchdog() {
        watchdog(every);
    }
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reading the source again and retrying every held resource");
                shared.triggers.fire(Trigger::Reload);
            }
        });
    }

    // The drivers' watches: what the host announces becomes a scheduler entry.
    let (watching, host_events) = watches::start(reconciler.drivers());
    shared.with_status(|s| {
        s.watching = watching
            .describe()
            .into_iter()
            .map(|(kind, line)| (kind.to_string(), line))
            .collect()
    });
    let git_poll = matches!(options.origin, Origin::Git(_)).then_some(options.poll);
    let mut controller = Controller::new(reconciler, options.origin, shared.clone());
    tracing::info!(
        source = %controller.origin().describe(),
        host = %settings.host,
        socket = %socket.display(),
        "controller started"
    );
    let timers = Timers {
        resync: options.resync,
        git_poll,
    };
    // The first reconcile reads the source and applies whatever it finds.
    let now = Instant::now();
    controller.scheduler().at(Key::Revision, Cause::Source, now);
    timers.arm(&mut controller, now, true, true);
    let mut loop_state = Loop {
        host_events,
        replies: Vec::new(),
        ready: false,
        image_gc_due: Instant::now(),
    };
    loop {
        let due = tokio::select! {
            due = loop_state.next(&mut controller, &shared) => due,
            _ = cancel.cancelled() => break,
        };
        if cancel.is_cancelled() {
            break;
        }
        let served = due.reasons;
        if served.resync || served.asked() {
            // The resync looks again at what no watch announces: no cached observation.
            crate::contract::cache::expire_all();
        }
        let outcome = controller.reconcile(due, &cancel).await;
        timers.arm(
            &mut controller,
            Instant::now(),
            served.resync,
            served.source,
        );
        if served.asked() {
            for reply in loop_state.replies.drain(..) {
                // A client that went away does not need its answer.
                let _ = reply.send(outcome.clone());
            }
        }
        if let Some(grace) = options.image_gc_after
            && Instant::now() >= loop_state.image_gc_due
        {
            loop_state.image_gc_due = Instant::now() + IMAGE_GC_EVERY;
            maintenance(&settings.host_settings(), grace);
        }
        if loop_state.ready {
            notifier.status(&outcome.summary);
        } else {
            notifier.ready(&outcome.summary);
            loop_state.ready = true;
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    notifier.stopping();
    tracing::info!("controller stopped");
    drop(api);
    Ok(())
}

/// Runs every kind's housekeeping ([`crate::drivers::Registration::maintenance`], the
/// container image store's collection) with `grace`; each starts its work on a blocking
/// thread, so this never waits for it.
fn maintenance(settings: &HostSettings, grace: Duration) {
    for registration in crate::drivers::registry() {
        if let Some(maintenance) = registration.maintenance {
            maintenance(settings, grace);
        }
    }
}

/// The timers the controller keeps as scheduler entries: the resync, and the poll of a
/// git source. Each is armed once at the start and again each time it is served.
struct Timers {
    resync: Duration,
    git_poll: Option<Duration>,
}

impl Timers {
    fn arm(&self, controller: &mut Controller, now: Instant, resync: bool, source: bool) {
        let scheduler = controller.scheduler();
        if resync && !scheduler.contains(&Key::Revision, Cause::Resync) {
            scheduler.at(Key::Revision, Cause::Resync, now + self.resync);
        }
        if let Some(poll) = self.git_poll
            && source
            && !scheduler.contains(&Key::Revision, Cause::Source)
        {
            scheduler.at(Key::Revision, Cause::Source, now + poll);
        }
    }
}

/// What the loop keeps between reconciles.
struct Loop {
    host_events: mpsc::UnboundedReceiver<HostEvent>,
    /// `gitvisor sync` requests waiting for the reconcile that serves them.
    replies: Vec<oneshot::Sender<SyncOutcome>>,
    ready: bool,
    image_gc_due: Instant,
}

impl Loop {
    /// Waits until something falls due, turning what arrives meanwhile (triggers,
    /// drivers' events) into scheduler entries.
    async fn next(&mut self, controller: &mut Controller, shared: &Shared) -> scheduler::Due {
        let mut events_open = true;
        loop {
            let now = Instant::now();
            if let Some(due) = controller.scheduler().take_due(now) {
                return due;
            }
            let next = controller.scheduler().next_due();
            tokio::select! {
                _ = shared.triggers.wait() => {}
                event = self.host_events.recv(), if events_open => match event {
                    Some(event) => host_event(controller, shared, event),
                    None => events_open = false,
                },
                _ = sleep_until(next), if next.is_some() => {}
            }
            let trigger::Fired {
                reasons,
                written,
                replies,
            } = shared.triggers.take();
            self.replies.extend(replies);
            let now = Instant::now();
            let scheduler = controller.scheduler();
            if reasons.source {
                // File events come in bursts (a save, a checkout); one that closed a
                // file after writing ends its writer's part of it.
                if written {
                    scheduler.written(Key::Revision, Cause::Source, now);
                } else {
                    scheduler.debounced(Key::Revision, Cause::Source, now);
                }
            }
            if reasons.resync {
                scheduler.at(Key::Revision, Cause::Resync, now);
            }
            if reasons.request {
                scheduler.at(Key::Revision, Cause::Request, now);
            }
            if reasons.reload {
                scheduler.at(Key::Revision, Cause::Reload, now);
            }
        }
    }
}

/// One event of a driver's watch: an entry of the scheduler, an event in the log, or
/// the live notes of status.
fn host_event(controller: &mut Controller, shared: &Shared, event: HostEvent) {
    tracing::debug!(%event, "watch");
    match event {
        HostEvent::Object(_) | HostEvent::Kind(_) | HostEvent::ObjectAt(..) => {
            controller.host_event(event, Instant::now());
        }
        HostEvent::Told { id, level, message } => {
            let level = match level {
                Severity::Info => EventLevel::Info,
                Severity::Warning => EventLevel::Warning,
                Severity::Error => EventLevel::Error,
            };
            shared
                .events
                .push(level, Some(&id), controller.revision_id(), message);
        }
        HostEvent::Live { kind, notes } => shared.with_status(|status| {
            let mut live = std::mem::take(&mut status.live);
            live.retain(|id, _| id.kind != kind);
            live.extend(notes);
            status.set_live(live);
        }),
    }
}

async fn sleep_until(when: Option<Instant>) {
    if let Some(when) = when {
        tokio::time::sleep_until(when).await;
    }
}

/// Sends `WATCHDOG=1` every `every` (half systemd's `WatchdogSec`). It runs on the same
/// runtime as the loop: a runtime that stops scheduling tasks stops the pings too.
fn watchdog(every: Duration) {
    tokio::spawn(async move {
        let notifier = sd_notify::Notifier::from_env();
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            notifier.watchdog_ping();
        }
    });
}
