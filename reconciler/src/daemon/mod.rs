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
//! 3. The triggers ([`trigger`]): the directory watch or the git poll timer, the resync
//!    timer, and the watchdog pinger when systemd asks for one; and the container watch
//!    ([`supervision`]): health verdicts, exits and restarts become events, and a dead
//!    container its `restartPolicy` restarts becomes a `container` trigger (or a wake-up
//!    when its backoff ends).
//! 4. The drivers' watches ([`watches`]): what the host announces (netlink links and
//!    addresses, nftables, a VM's process exiting) becomes a `host` trigger, one per
//!    burst (quiet for 30 ms, at most 200 ms), so drift is repaired within a second
//!    rather than at the resync. While a driver watches, its plans reuse its last
//!    observation until it hears of a change ([`crate::contract::cache`]); the resync
//!    and a `sync` make every driver observe again.
//! 5. The loop: one reconcile at a time ([`controller`]), each taking every trigger
//!    gathered while the previous one ran. A directory's burst of file events is
//!    debounced first (quiet for 100 ms, at most 500 ms), so a save is applied well
//!    within a second. `READY=1` goes to systemd after the first reconcile attempt,
//!    `STATUS=` after every one.
//!
//! Between reconciles nothing runs: the loop sleeps on the triggers, the next retry, the
//! container watch (inotify and pidfds) and the signals; there is no polling other than
//! the git poll the user configured.

pub mod api;
pub mod controller;
mod error;
pub mod events;
pub mod metrics;
pub mod retry;
pub mod sd_notify;
pub mod shared;
pub mod status;
pub mod supervision;
pub mod trigger;
pub mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior};

pub use controller::{Controller, Origin};
pub use error::DaemonError;
pub use shared::Shared;
pub use status::ControllerStatus;
pub use trigger::{Reasons, SyncOutcome, Trigger};

use crate::reconcile::Reconciler;
use crate::source::DirWatcher;
use crate::state::ReadOnlyStore;

/// Default time between resyncs.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// Default time between polls of a git source.
pub const DEFAULT_POLL: Duration = Duration::from_secs(60);
/// A burst of file events ends after this much quiet…
const DEBOUNCE_QUIET: Duration = Duration::from_millis(100);
/// …or this long after it started, whichever comes first.
const DEBOUNCE_MAX: Duration = Duration::from_millis(500);
/// A burst of host events (a bridge deleted: its link, its addresses, its rules) ends
/// after this much quiet…
const HOST_QUIET: Duration = Duration::from_millis(30);
/// …or this long after it started.
const HOST_MAX: Duration = Duration::from_millis(200);
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
        .with_leases_from(crate::drivers::network::network_dir(&settings.run_dir)),
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
            Some(crate::source::watch::watch(dir, move || {
                shared.triggers.fire(Trigger::Source)
            })?)
        }
        Origin::Git(_) => {
            tick(shared.clone(), options.poll, Trigger::Source);
            None
        }
    };
    tick(shared.clone(), options.resync, Trigger::Resync);
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

    // The drivers' watches: a change the host announces fires a reconcile at once.
    let (watching, host_events) = watches::start(reconciler.drivers());
    shared.with_status(|s| {
        s.watching = watching
            .describe()
            .into_iter()
            .map(|(kind, line)| (kind.to_string(), line))
            .collect()
    });
    tokio::spawn(forward_host_events(host_events, shared.clone()));

    let mut supervision = supervision::Supervision::start(&settings.run_dir, &settings.state_dir);
    let dir_source = matches!(options.origin, Origin::Dir(_));
    let mut controller = Controller::new(reconciler, options.origin, shared.clone());
    tracing::info!(
        source = %controller.origin().describe(),
        host = %settings.host,
        socket = %socket.display(),
        "controller started"
    );
    // The first reconcile reads the source and applies whatever it finds.
    shared.triggers.fire(Trigger::Source);
    let mut ready = false;
    let mut image_gc_due = Instant::now();
    loop {
        if ready {
            let retry = controller.next_retry();
            let mut look = false;
            tokio::select! {
                _ = shared.triggers.wait() => {}
                _ = cancel.cancelled() => break,
                _ = sleep_until(retry), if retry.is_some() => shared.triggers.fire(Trigger::Retry),
                _ = containers_changed(supervision.as_mut()) => look = true,
            }
            if let (true, Some(supervision)) = (look, supervision.as_mut()) {
                supervision.look(&mut controller, &shared).await;
            }
            if dir_source && shared_source_pending(&shared) {
                debounce(&shared).await;
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        let (reasons, replies) = shared.triggers.take();
        if ready && !reasons.any() {
            continue;
        }
        if reasons.resync || reasons.asked() {
            // The resync looks again at what no watch announces: no cached observation.
            crate::contract::cache::expire_all();
        }
        let outcome = controller.reconcile(reasons, &cancel).await;
        for reply in replies {
            // A client that went away does not need its answer.
            let _ = reply.send(outcome.clone());
        }
        if let Some(supervision) = &supervision {
            // The reconcile may have started, stopped or replaced containers.
            supervision.poke();
        }
        if let Some(grace) = options.image_gc_after
            && Instant::now() >= image_gc_due
        {
            image_gc_due = Instant::now() + IMAGE_GC_EVERY;
            collect_images(&settings.run_dir, &settings.state_dir, grace);
        }
        if ready {
            notifier.status(&outcome.summary);
        } else {
            notifier.ready(&outcome.summary);
            ready = true;
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

/// Collects the container image store on a blocking thread, removing what no container
/// has used for `grace` ([`crate::drivers::container::image::gc`]); never waits for it.
fn collect_images(run_dir: &std::path::Path, state_dir: &std::path::Path, grace: Duration) {
    use crate::drivers::container::image::gc::{GcError, Policy};
    let host = crate::drivers::container::RuncHost::new(run_dir, state_dir);
    tokio::task::spawn_blocking(
        move || match host.prune_images(Policy::After(grace), false) {
            Ok(report) if !report.removed.is_empty() => tracing::info!(
                removed = report.removed.len(),
                bytes = report.bytes(),
                waiting = report.waiting,
                "image store: removed what no container used for {}",
                humantime::format_duration(grace)
            ),
            Ok(_) => {}
            Err(error @ GcError::Busy { .. }) => tracing::debug!("{error}"),
            Err(error) => {
                tracing::warn!(error = %crate::contract::chain(&error), "image store collection")
            }
        },
    );
}

/// Turns the watches' events into `host` triggers, one per burst (see [`HOST_QUIET`]).
/// Today's loop reconciles the whole revision for any of them; the event names what
/// changed for the log.
async fn forward_host_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<crate::contract::HostEvent>,
    shared: Arc<Shared>,
) {
    while let Some(first) = events.recv().await {
        tracing::debug!("host: {first}");
        let deadline = Instant::now() + HOST_MAX;
        loop {
            tokio::select! {
                next = events.recv() => match next {
                    Some(event) => tracing::debug!("host: {event}"),
                    None => break,
                },
                _ = tokio::time::sleep(HOST_QUIET) => break,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        shared.triggers.fire(Trigger::Host);
    }
}

/// Whether a source trigger is waiting (to debounce it).
fn shared_source_pending(shared: &Shared) -> bool {
    shared.triggers.peek().source
}

/// Waits until the burst of file events is over (see [`DEBOUNCE_QUIET`]).
async fn debounce(shared: &Shared) {
    let deadline = Instant::now() + DEBOUNCE_MAX;
    loop {
        tokio::select! {
            _ = shared.triggers.next_source_event() => {
                if Instant::now() >= deadline {
                    return;
                }
            }
            _ = tokio::time::sleep(DEBOUNCE_QUIET) => return,
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Waits for the container watch; forever when there is none.
async fn containers_changed(supervision: Option<&mut supervision::Supervision>) {
    match supervision {
        Some(supervision) => supervision.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(when: Option<Instant>) {
    if let Some(when) = when {
        tokio::time::sleep_until(when).await;
    }
}

/// Fires `trigger` every `every`, the first time one period from now.
fn tick(shared: Arc<Shared>, every: Duration, trigger: Trigger) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            shared.triggers.fire(trigger);
        }
    });
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
