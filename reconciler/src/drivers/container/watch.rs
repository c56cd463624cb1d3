//! Watching gitvisor's containers between reconciles, for the controller: wakes up when
//! something about a container may have changed, then looks at all of them at once.
//!
//! # What wakes it, and why these
//!
//! - **The supervisor's records.** The supervisor ([`shim`](super::shim)) writes
//!   `health.json` when the verdict changes and `exit.json` when the process ends;
//!   gitvisor writes `restarts`, `stopped`, and runc the `pid` file, when it (re)starts
//!   or stops one. inotify watches the bundles directory (containers come and go) and
//!   each bundle directory, not recursively (the root file system below it is the
//!   container's business). Only those file names count; reads never do.
//! - **Process exits.** A container whose supervisor was killed dies without anyone
//!   writing a file. So the watch holds a pidfd for each container's init and each
//!   supervisor: a pidfd becomes readable when its process ends, which wakes the watch
//!   through the runtime's epoll. Nothing polls.
//!
//! A burst of wake-ups (a restart writes several files) is collapsed: the watch waits
//! until it is quiet for 100 ms (at most 500 ms), then [`SupervisorWatch::look`] lists
//! the runtime once ([`ContainerHost::list`], as `plan` does) and says, per container,
//! whether its supervisor still runs. A burst of nothing but `health.json` rewrites
//! whose verdict is the one last seen (a failing check counting its failures) is
//! dropped after reading those files, without a list. While nothing changes, it sleeps.
//!
//! A supervisor is alive when the pid it recorded (`supervisor.pid`) is a running
//! (not zombie) `gitvisor container-shim` for this bundle, so a reused pid never counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::host::{EXIT_FILE, HEALTH_FILE, PID_FILE, RESTARTS_FILE, RuncHost, STOPPED_FILE};
use super::seam::{ContainerHost, HealthRecord, HostError, RuntimeContainer, RuntimeStatus};
use super::shim::SUPERVISOR_PID_FILE;
use super::supervision::Sighting;
use crate::drivers::pidfd::{ExitWait, on_exit};

/// A burst of wake-ups ends after this much quiet…
const QUIET: Duration = Duration::from_millis(100);
/// …or this long after it started.
const BURST_MAX: Duration = Duration::from_millis(500);

/// The files whose change may change what [`SupervisorWatch::look`] sees.
const WATCHED_FILES: &[&str] = &[
    EXIT_FILE,
    HEALTH_FILE,
    RESTARTS_FILE,
    STOPPED_FILE,
    PID_FILE,
    SUPERVISOR_PID_FILE,
];

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot watch {path} for container changes: {source}; health changes and exits are then seen at the next resync (raise fs.inotify.max_user_watches or max_user_instances if they are exhausted)"
    )]
    Inotify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// One container as [`SupervisorWatch::look`] found it.
#[derive(Debug, Clone)]
pub struct Look {
    pub container: RuntimeContainer,
    pub sighting: Sighting,
}

/// Why the watch woke up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wake {
    /// Container `id`'s `health.json` was rewritten.
    Health(String),
    /// Anything else: look at everything.
    Any,
}

/// Whose exit a pidfd waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Init,
    Supervisor,
}

/// Asks a [`SupervisorWatch`] for a look ([`SupervisorWatch::poke_handle`]).
#[derive(Debug, Clone)]
pub struct Poke(mpsc::UnboundedSender<Wake>);

impl Poke {
    pub fn poke(&self) {
        let _ = self.0.send(Wake::Any);
    }
}

pub struct SupervisorWatch {
    host: RuncHost,
    run_dir: PathBuf,
    bundles: PathBuf,
    watcher: RecommendedWatcher,
    wake: mpsc::UnboundedSender<Wake>,
    wakes: mpsc::UnboundedReceiver<Wake>,
    /// Wake-ups taken but not yet looked at: any, and the health rewrites.
    pending_any: bool,
    pending_health: BTreeSet<String>,
    /// Each container's health verdict at the last look.
    verdicts: BTreeMap<String, Option<String>>,
    /// Whether the bundles directory itself is watched (else the run dir, until it
    /// appears).
    bundles_watched: bool,
    /// The bundle directories watched.
    watched: BTreeSet<String>,
    /// The pidfd waits, per container and role: the pid and the task.
    exits: BTreeMap<(String, Role), (u32, AbortHandle)>,
}

impl std::fmt::Debug for SupervisorWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorWatch")
            .field("bundles", &self.bundles)
            .finish_non_exhaustive()
    }
}

impl SupervisorWatch {
    /// Watches the containers of the gitvisor with these directories. The first
    /// [`SupervisorWatch::changed`] returns at once, so the caller takes a first look.
    pub fn start(run_dir: &Path, state_dir: &Path) -> Result<SupervisorWatch, WatchError> {
        let host = RuncHost::new(run_dir, state_dir);
        let bundles = run_dir.join("containers");
        let (wake, wakes) = mpsc::unbounded_channel();
        let sender = wake.clone();
        let watched = bundles.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) => {
                    for wake in classify(&event, &watched) {
                        let _ = sender.send(wake);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the container watch reported an error; looking at every container");
                    let _ = sender.send(Wake::Any);
                }
            }
        })
        .map_err(|source| WatchError::Inotify {
            path: bundles.clone(),
            source,
        })?;
        let mut watch = SupervisorWatch {
            host,
            run_dir: run_dir.to_owned(),
            bundles,
            watcher,
            wake,
            wakes,
            pending_any: true,
            pending_health: BTreeSet::new(),
            verdicts: BTreeMap::new(),
            bundles_watched: false,
            watched: BTreeSet::new(),
            exits: BTreeMap::new(),
        };
        watch.watch_bundles()?;
        Ok(watch)
    }

    /// Waits until something may have changed, and the burst of changes is over.
    /// Cancel-safe: wake-ups taken by a call that is dropped are kept for the next.
    pub async fn changed(&mut self) {
        loop {
            if !self.pending_any && self.pending_health.is_empty() {
                let Some(wake) = self.wakes.recv().await else {
                    // The watch's own sender lives as long as the watch.
                    return std::future::pending().await;
                };
                self.take(wake);
            }
            let deadline = Instant::now() + BURST_MAX;
            loop {
                tokio::select! {
                    more = self.wakes.recv() => match more {
                        Some(wake) => {
                            self.take(wake);
                            if Instant::now() >= deadline {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep(QUIET) => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            if self.pending_any || self.verdict_changed() {
                return;
            }
            self.pending_health.clear();
        }
    }

    fn take(&mut self, wake: Wake) {
        match wake {
            Wake::Any => self.pending_any = true,
            Wake::Health(id) => {
                self.pending_health.insert(id);
            }
        }
    }

    /// Whether a rewritten `health.json` has another verdict than the last look saw
    /// (or cannot be read: the look finds out why).
    fn verdict_changed(&self) -> bool {
        self.pending_health.iter().any(|id| {
            let file = self.host.bundle(id).join(HEALTH_FILE);
            let now = std::fs::read(&file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<HealthRecord>(&bytes).ok())
                .map(|record| record.status);
            now.is_none() || self.verdicts.get(id) != Some(&now)
        })
    }

    /// Asks for a look at the next [`SupervisorWatch::changed`] (after a reconcile, say).
    pub fn poke(&self) {
        let _ = self.wake.send(Wake::Any);
    }

    /// A handle that asks for a look, for whoever changes containers (the driver's
    /// apply) while the watch runs elsewhere.
    pub fn poke_handle(&self) -> Poke {
        Poke(self.wake.clone())
    }

    /// Lists every container (one `runc list`), renews the watches and the pidfd waits,
    /// and says how each container is doing, by id.
    pub async fn look(&mut self) -> Result<BTreeMap<String, Look>, HostError> {
        self.pending_any = false;
        self.pending_health.clear();
        if let Err(error) = self.watch_bundles() {
            tracing::warn!(error = %crate::contract::chain(&error), "container watch");
        }
        let containers = if self.bundles_watched {
            self.host.list().await?
        } else {
            Vec::new()
        };
        let mut looks = BTreeMap::new();
        let mut wanted: BTreeMap<(String, Role), u32> = BTreeMap::new();
        // A failed create is no container to watch; the next plan cleans or recreates it.
        for container in containers
            .into_iter()
            .filter(|c| c.status != RuntimeStatus::NotCreated)
        {
            let bundle = self.host.bundle(&container.id);
            let supervisor = supervisor_pid(&bundle);
            let supervised = supervisor.is_some();
            if let Some(pid) = supervisor {
                wanted.insert((container.id.clone(), Role::Supervisor), pid);
            }
            let live = matches!(
                container.status,
                RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Created
            );
            if let (true, Some(pid)) = (live, container.pid) {
                wanted.insert((container.id.clone(), Role::Init), pid);
            }
            let sighting = Sighting::of(&container, supervised);
            looks.insert(
                container.id.clone(),
                Look {
                    container,
                    sighting,
                },
            );
        }
        self.wait_for_exits(wanted);
        self.verdicts = looks
            .iter()
            .map(|(id, look)| {
                let verdict = look.container.health.as_ref().map(|h| h.status.clone());
                (id.clone(), verdict)
            })
            .collect();
        Ok(looks)
    }

    /// Watches the bundles directory (or the run dir until it exists) and each bundle.
    fn watch_bundles(&mut self) -> Result<(), WatchError> {
        if !self.bundles_watched {
            if self.bundles.is_dir() {
                self.add(&self.bundles.clone())?;
                self.bundles_watched = true;
                let _ = self.watcher.unwatch(&self.run_dir);
            } else {
                // Until the first container, its parent tells when it appears.
                self.add(&self.run_dir.clone())?;
                return Ok(());
            }
        }
        let present: BTreeSet<String> = std::fs::read_dir(&self.bundles)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for gone in self
            .watched
            .difference(&present)
            .cloned()
            .collect::<Vec<_>>()
        {
            // The kernel dropped the watch with the directory.
            let _ = self.watcher.unwatch(&self.bundles.join(&gone));
            self.watched.remove(&gone);
        }
        for new in present.difference(&self.watched.clone()) {
            self.add(&self.bundles.join(new))?;
            self.watched.insert(new.clone());
        }
        Ok(())
    }

    fn add(&mut self, path: &Path) -> Result<(), WatchError> {
        self.watcher
            .watch(path, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Inotify {
                path: path.to_owned(),
                source,
            })
    }

    /// Keeps one pidfd wait per wanted process, ends the others.
    fn wait_for_exits(&mut self, wanted: BTreeMap<(String, Role), u32>) {
        self.exits.retain(|key, (pid, task)| {
            let keep = wanted.get(key) == Some(pid);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, pid) in wanted {
            if self.exits.contains_key(&key) {
                continue;
            }
            if let Some(task) = wait_for_exit(pid, self.wake.clone()) {
                self.exits.insert(key, (pid, task));
            }
        }
    }
}

impl Drop for SupervisorWatch {
    fn drop(&mut self) {
        for (_, task) in self.exits.values() {
            task.abort();
        }
    }
}

/// A task that wakes the watch when process `pid` ends. `None` when there is nothing to
/// wait for: the process is already gone (the watch is woken at once) or pidfds are not
/// available (its end is then seen at the next look).
fn wait_for_exit(pid: u32, wake: mpsc::UnboundedSender<Wake>) -> Option<AbortHandle> {
    let woken = wake.clone();
    match on_exit(pid, "at the next look", move || {
        let _ = woken.send(Wake::Any);
    }) {
        ExitWait::Waiting(task) => Some(task),
        ExitWait::Gone => {
            let _ = wake.send(Wake::Any);
            None
        }
        ExitWait::Unavailable => None,
    }
}

/// The wake-ups `event` makes: one per file [`SupervisorWatch::look`] reads, or per
/// bundle (or the bundles directory) coming or going; none for reads and other files.
fn classify(event: &notify::Event, bundles: &Path) -> Vec<Wake> {
    if matches!(event.kind, EventKind::Access(_)) {
        return Vec::new();
    }
    if event.need_rescan() || event.paths.is_empty() {
        return vec![Wake::Any];
    }
    let created_or_removed = matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_));
    event
        .paths
        .iter()
        .filter_map(|path| {
            if path == bundles || path.parent() == Some(bundles) {
                return created_or_removed.then_some(Wake::Any);
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let bundle = path
                .parent()
                .filter(|p| p.parent() == Some(bundles))
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())?;
            if name == HEALTH_FILE {
                Some(Wake::Health(bundle.to_owned()))
            } else {
                WATCHED_FILES.contains(&name).then_some(Wake::Any)
            }
        })
        .collect()
}

/// The pid of the bundle's supervisor, when it still runs.
fn supervisor_pid(bundle: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(bundle.join(SUPERVISOR_PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
    // `pid (comm) S …`: the state follows the last ')'.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    let cmdline = std::fs::read(proc.join("cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let bundle = bundle.as_os_str().as_encoded_bytes();
    let ours = args.contains(&b"container-shim".as_slice()) && args.contains(&bundle);
    ours.then_some(pid)
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_the_records_and_bundles_coming_and_going_wake_the_watch() {
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let any = vec![Wake::Any];
        let none: Vec<Wake> = Vec::new();
        let classify_here = |event: &notify::Event| classify(event, Path::new("/run/containers"));
        assert_eq!(
            classify_here(&event(renamed, "/run/containers/web/exit.json")),
            any
        );
        assert_eq!(
            classify_here(&event(renamed, "/run/containers/web/health.json")),
            [Wake::Health("web".into())]
        );
        assert_eq!(
            classify_here(&event(renamed, "/run/containers/web/restarts")),
            any
        );
        assert_eq!(
            classify_here(&event(
                EventKind::Create(CreateKind::Folder),
                "/run/containers/web"
            )),
            any
        );
        assert_eq!(
            classify_here(&event(
                EventKind::Access(AccessKind::Any),
                "/run/containers/web/exit.json"
            )),
            none
        );
        assert_eq!(
            classify_here(&event(renamed, "/run/containers/web/health.tmp")),
            none
        );
        assert_eq!(
            classify_here(&event(renamed, "/run/containers/web/runc.log")),
            none
        );
        assert_eq!(
            classify_here(&event(
                EventKind::Create(CreateKind::File),
                "/run/containers/web/.tmpX1y2"
            )),
            none
        );
        // Names may have dots; the run dir's other files are not containers.
        assert_eq!(
            classify_here(&event(
                EventKind::Remove(RemoveKind::Folder),
                "/run/containers/web.v2"
            )),
            any
        );
        assert_eq!(
            classify_here(&event(
                EventKind::Create(CreateKind::Folder),
                "/run/containers"
            )),
            any
        );
        assert_eq!(
            classify_here(&event(EventKind::Create(CreateKind::File), "/run/pid")),
            none
        );
        assert_eq!(
            classify_here(&event(renamed, "/run/containers/web/rootfs/pid")),
            none
        );
        assert_eq!(
            classify_here(
                &notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
            ),
            any
        );
    }

    #[test]
    fn a_supervisor_counts_only_while_its_process_is_a_shim_for_this_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(supervisor_pid(dir.path()), None, "no record");
        // This test process is alive but no container-shim: a reused pid.
        std::fs::write(
            dir.path().join(SUPERVISOR_PID_FILE),
            std::process::id().to_string(),
        )
        .unwrap();
        assert_eq!(supervisor_pid(dir.path()), None);
    }

    fn write_health(bundle: &Path, status: &str, failures: u32) {
        let json = format!(r#"{{"status":"{status}","failures":{failures},"lastOutput":""}}"#);
        std::fs::write(bundle.join("health.tmp"), json).unwrap();
        std::fs::rename(bundle.join("health.tmp"), bundle.join(HEALTH_FILE)).unwrap();
    }

    #[tokio::test]
    async fn records_written_in_a_bundle_wake_the_watch_and_a_steady_verdict_needs_no_look() {
        let run = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let bundle = run.path().join("containers/web");
        std::fs::create_dir_all(&bundle).unwrap();
        let mut watch = SupervisorWatch::start(run.path(), state.path()).unwrap();
        watch.changed().await;
        // No runtime root yet: nothing listed, and no runc run.
        assert!(watch.look().await.unwrap().is_empty());
        watch.verdicts.insert("web".into(), Some("starting".into()));

        // A failing check counting its failures: same verdict, no look needed.
        write_health(&bundle, "starting", 2);
        let wake = watch.wakes.recv().await.unwrap();
        assert_eq!(wake, Wake::Health("web".into()));
        watch.take(wake);
        assert!(!watch.verdict_changed());
        // A new verdict needs one.
        write_health(&bundle, "healthy", 0);
        let wake = watch.wakes.recv().await.unwrap();
        watch.take(wake);
        assert!(watch.verdict_changed());

        // (A rename is several inotify events: later health wake-ups are skipped.)
        let mut next_any = async || {
            while let Some(wake) = watch.wakes.recv().await {
                if wake == Wake::Any {
                    return true;
                }
            }
            false
        };
        std::fs::write(bundle.join(EXIT_FILE), "{}").unwrap();
        assert!(next_any().await);
        // A new bundle appearing.
        std::fs::create_dir(run.path().join("containers/db.v2")).unwrap();
        assert!(next_any().await);
    }

    #[tokio::test]
    async fn a_pidfd_wakes_the_watch_when_its_process_ends() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("1000")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let (wake, mut wakes) = mpsc::unbounded_channel();
        let task = wait_for_exit(pid, wake.clone()).expect("a pidfd wait");
        assert!(wakes.try_recv().is_err(), "no wake while it runs");
        child.kill().await.unwrap();
        wakes.recv().await.expect("woken by the exit");
        task.abort();
        // Gone already: woken at once, nothing to wait for.
        assert!(wait_for_exit(pid, wake).is_none());
        assert!(wakes.recv().await.is_some());
    }
}
