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
//! whether its supervisor still runs. While nothing changes, it sleeps.
//!
//! A supervisor is alive when the pid it recorded (`supervisor.pid`) is a running
//! (not zombie) `gitvisor container-shim` for this bundle, so a reused pid never counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::host::{EXIT_FILE, HEALTH_FILE, PID_FILE, RESTARTS_FILE, RuncHost, STOPPED_FILE};
use super::seam::{ContainerHost, HostError, RuntimeContainer, RuntimeStatus};
use super::shim::SUPERVISOR_PID_FILE;
use super::supervision::Sighting;

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

/// Whose exit a pidfd waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Init,
    Supervisor,
}

pub struct SupervisorWatch {
    host: RuncHost,
    run_dir: PathBuf,
    bundles: PathBuf,
    watcher: RecommendedWatcher,
    wake: mpsc::UnboundedSender<()>,
    wakes: mpsc::UnboundedReceiver<()>,
    /// A wake-up was taken but not yet looked at.
    pending: bool,
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
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if !relevant(&event) => {}
                Ok(_) => {
                    let _ = sender.send(());
                }
                Err(error) => {
                    tracing::warn!(%error, "the container watch reported an error; looking at every container");
                    let _ = sender.send(());
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
            pending: true,
            bundles_watched: false,
            watched: BTreeSet::new(),
            exits: BTreeMap::new(),
        };
        watch.watch_bundles()?;
        Ok(watch)
    }

    /// Waits until something may have changed, and the burst of changes is over.
    /// Cancel-safe: a wake-up taken by a call that is dropped is kept for the next.
    pub async fn changed(&mut self) {
        if !self.pending {
            if self.wakes.recv().await.is_none() {
                // The watch's own sender lives as long as the watch.
                std::future::pending::<()>().await;
            }
            self.pending = true;
        }
        let deadline = Instant::now() + BURST_MAX;
        loop {
            tokio::select! {
                more = self.wakes.recv() => {
                    if more.is_none() || Instant::now() >= deadline {
                        return;
                    }
                }
                _ = tokio::time::sleep(QUIET) => return,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Asks for a look at the next [`SupervisorWatch::changed`] (after a reconcile, say).
    pub fn poke(&self) {
        let _ = self.wake.send(());
    }

    /// Lists every container (one `runc list`), renews the watches and the pidfd waits,
    /// and says how each container is doing, by id.
    pub async fn look(&mut self) -> Result<BTreeMap<String, Look>, HostError> {
        self.pending = false;
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
        for container in containers {
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
fn wait_for_exit(pid: u32, wake: mpsc::UnboundedSender<()>) -> Option<AbortHandle> {
    let raw = i32::try_from(pid).ok()?;
    let pid = rustix::process::Pid::from_raw(raw)?;
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => {
            let _ = wake.send(());
            return None;
        }
        Err(error) => {
            tracing::debug!(pid = raw, %error, "cannot open a pidfd; the process's end is seen at the next look");
            return None;
        }
    };
    // Deprecated as unsound for a `T` that does not own its descriptor (it could be
    // closed while registered); an `OwnedFd` moved into the `AsyncFd` cannot be.
    #[allow(deprecated)]
    let fd = match AsyncFd::with_interest(fd, Interest::READABLE) {
        Ok(fd) => fd,
        Err(error) => {
            tracing::debug!(pid = raw, %error, "cannot poll a pidfd; the process's end is seen at the next look");
            return None;
        }
    };
    let task = tokio::spawn(async move {
        // Readable once the process has ended.
        let _ = fd.readable().await;
        let _ = wake.send(());
    });
    Some(task.abort_handle())
}

/// Whether `event` is about a file [`SupervisorWatch::look`] reads, or a bundle coming
/// or going.
fn relevant(event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.need_rescan()
        || event.paths.is_empty()
        || event.paths.iter().any(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            WATCHED_FILES.contains(&name)
                || matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_))
                    && !name.contains('.')
        })
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
    use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_the_records_and_bundles_coming_and_going_wake_the_watch() {
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(relevant(&event(renamed, "/run/containers/web/exit.json")));
        assert!(relevant(&event(renamed, "/run/containers/web/health.json")));
        assert!(relevant(&event(renamed, "/run/containers/web/restarts")));
        assert!(relevant(&event(
            EventKind::Create(CreateKind::Folder),
            "/run/containers/web"
        )));
        assert!(!relevant(&event(
            EventKind::Access(AccessKind::Any),
            "/run/containers/web/exit.json"
        )));
        assert!(!relevant(&event(renamed, "/run/containers/web/health.tmp")));
        assert!(!relevant(&event(renamed, "/run/containers/web/runc.log")));
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::File),
            "/run/containers/web/.tmpX1y2"
        )));
        assert!(relevant(
            &notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        ));
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
