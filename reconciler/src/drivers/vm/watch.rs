//! The VMs' watch: a hypervisor process (QEMU or gitvisor-vmm) that ends, however it
//! ends, is announced at once as [`HostEvent::Object`] of its VM.
//!
//! # What wakes it, and why these
//!
//! - **A pidfd per VM process**, from the pid file in each VM's run dir: it becomes
//!   readable when the process ends (a guest powered off, QEMU killed, a crash), which
//!   wakes the watch through the runtime's epoll. A SIGKILLed QEMU leaves its pid file
//!   behind, so nothing in the file system would tell; the pidfd does.
//! - **inotify on `<run dir>/vm`** (recursive: the VMs' directories and their `pid`
//!   files), so a VM started or stopped (a new pid file), or a run dir removed by hand,
//!   is seen and the pidfds follow. Only `pid` files and the VMs' directories count: a
//!   guest writing its serial log wakes nothing but the filter. Before the first VM
//!   exists the watch waits on the run dir for `vm` to appear.
//!
//! QMP events (a guest paused or resumed from inside, a reset) are not watched: the
//! driver holds no QMP connection between applies (`apply` needs the socket), and what
//! they would announce is the resync's to see. The VM driver keeps no observation cache
//! either: its observation includes the DHCP leases of its guests, which nothing
//! announces to it, so each plan reads the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::paths::{TEMPORARY_PREFIX, VmRoots};
use crate::contract::{Classify, FailureClass, HostEvent, WatchHandle, WatchSink, Watching};
use crate::drivers::pidfd::{ExitWait, on_exit};
use crate::model::{Kind, Name, ResourceId};

/// The VM watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum VmWatchError {
    #[error(
        "cannot watch the VMs' run dirs below {}: inotify failed (raise fs.inotify.max_user_instances?)",
        path.display()
    )]
    Inotify {
        path: PathBuf,
        #[source]
        cause: notify::Error,
    },
}

impl Classify for VmWatchError {
    fn class(&self) -> FailureClass {
        FailureClass::NeedsUser
    }
}

/// What woke the watch.
#[derive(Debug)]
enum Wake {
    /// A pid file or a VM's directory came, changed or went.
    Files,
    /// The process `pid` of VM `vm` ended.
    Exited { vm: String, pid: u32 },
}

/// Starts the watch of the VMs below `roots.run`.
pub(super) fn start(sink: WatchSink, roots: &VmRoots) -> Result<Watching, VmWatchError> {
    let (wake, woken) = mpsc::unbounded_channel();
    let vm_root = roots.run.clone();
    let watcher = {
        let wake = wake.clone();
        let vm_root = vm_root.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|event| counts(&event, &vm_root)) {
                let _ = wake.send(Wake::Files);
            }
        })
        .map_err(|cause| VmWatchError::Inotify {
            path: roots.run.clone(),
            cause,
        })?
    };
    let mut watch = VmWatch {
        vm_root,
        watcher,
        watching_root: false,
        processes: BTreeMap::new(),
        wake,
        sink,
    };
    watch.follow_root()?;
    watch.rescan();
    let task = tokio::spawn(watch.run(woken));
    Ok(Watching::Announced {
        what: "a pidfd per VM process; inotify on the VMs' run dirs".into(),
        handle: WatchHandle::new(vec![task]),
    })
}

/// Whether `event` may change which VM processes there are: a `pid` file, a VM's
/// directory, or the VMs' root itself (not reads, not a serial log).
fn counts(event: &notify::Event, vm_root: &Path) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    event.paths.iter().any(|path| {
        path == vm_root
            || path.parent() == Some(vm_root)
            || path.file_name().is_some_and(|name| name == "pid")
    })
}

struct VmWatch {
    vm_root: PathBuf,
    watcher: RecommendedWatcher,
    /// Whether `vm_root` itself is watched (else its parent, until it appears).
    watching_root: bool,
    /// Each VM's process and the task waiting for its end.
    processes: BTreeMap<String, (u32, AbortHandle)>,
    wake: mpsc::UnboundedSender<Wake>,
    sink: WatchSink,
}

impl VmWatch {
    /// Watches `<run dir>/vm` when it exists, else the run dir for it to appear.
    fn follow_root(&mut self) -> Result<(), VmWatchError> {
        if self.watching_root {
            return Ok(());
        }
        let inotify_error = |cause| VmWatchError::Inotify {
            path: self.vm_root.clone(),
            cause,
        };
        if self.vm_root.is_dir() {
            self.watcher
                .watch(&self.vm_root, RecursiveMode::Recursive)
                .map_err(inotify_error)?;
            self.watching_root = true;
            if let Some(parent) = self.vm_root.parent() {
                let _ = self.watcher.unwatch(parent);
            }
        } else if let Some(parent) = self.vm_root.parent().filter(|p| p.is_dir()) {
            self.watcher
                .watch(parent, RecursiveMode::NonRecursive)
                .map_err(inotify_error)?;
        }
        Ok(())
    }

    async fn run(mut self, mut woken: mpsc::UnboundedReceiver<Wake>) {
        while let Some(wake) = woken.recv().await {
            match wake {
                Wake::Files => {
                    if let Err(error) = self.follow_root() {
                        tracing::warn!(error = %crate::contract::chain(&error), "VM watch");
                    }
                    self.rescan();
                }
                Wake::Exited { vm, pid } => {
                    if self
                        .processes
                        .get(&vm)
                        .is_some_and(|(known, _)| *known == pid)
                    {
                        self.processes.remove(&vm);
                        tracing::debug!(vm, pid, "the VM's process ended");
                        self.announce(&vm);
                    }
                }
            }
            if self.sink.is_closed() {
                return;
            }
        }
    }

    /// Reads every VM's pid file; follows new processes, announces VMs whose process
    /// or directory went.
    fn rescan(&mut self) {
        let mut now: BTreeMap<String, Option<u32>> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.vm_root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEMPORARY_PREFIX) || !entry.path().is_dir() {
                    continue;
                }
                let pid = std::fs::read_to_string(entry.path().join("pid"))
                    .ok()
                    .and_then(|text| text.trim().parse::<u32>().ok());
                now.insert(name, pid);
            }
        }
        let gone: Vec<String> = self
            .processes
            .keys()
            .filter(|vm| now.get(*vm).copied().flatten().is_none())
            .cloned()
            .collect();
        for vm in gone {
            if let Some((_, task)) = self.processes.remove(&vm) {
                task.abort();
            }
            self.announce(&vm);
        }
        for (vm, pid) in now {
            let Some(pid) = pid else { continue };
            if self
                .processes
                .get(&vm)
                .is_some_and(|(known, _)| *known == pid)
            {
                continue;
            }
            if let Some((_, task)) = self.processes.remove(&vm) {
                task.abort();
            }
            match wait_for_exit(&vm, pid, self.wake.clone()) {
                Some(task) => {
                    self.processes.insert(vm, (pid, task));
                }
                // Already gone (a stale pid file): the VM may need a start.
                None => self.announce(&vm),
            }
        }
    }

    fn announce(&self, vm: &str) {
        let event = match Name::parse(vm) {
            Ok(name) => HostEvent::Object(ResourceId::new(Kind::VirtualMachine, name)),
            Err(_) => HostEvent::Kind(Kind::VirtualMachine),
        };
        self.sink.send(event);
    }
}

impl Drop for VmWatch {
    fn drop(&mut self) {
        for (_, task) in self.processes.values() {
            task.abort();
        }
    }
}

/// A task that says when process `pid` of `vm` ends; `None` when it is already gone or
/// cannot be waited for (then the resync sees it).
fn wait_for_exit(vm: &str, pid: u32, wake: mpsc::UnboundedSender<Wake>) -> Option<AbortHandle> {
    let vm = vm.to_owned();
    match on_exit(pid, "at the resync", move || {
        let _ = wake.send(Wake::Exited { vm, pid });
    }) {
        ExitWait::Waiting(task) => Some(task),
        ExitWait::Gone | ExitWait::Unavailable => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A process named by a VM's pid file is announced when it is killed; a VM whose
    /// run dir appears later is followed too.
    #[tokio::test]
    async fn a_killed_vm_process_is_announced_at_once() {
        let run = tempfile::tempdir().expect("temp dir");
        let roots = VmRoots::new(run.path(), run.path());
        let (sink, mut events) = WatchSink::channel();
        let _watching = start(sink, &roots).expect("the watch starts");

        // The VMs' root does not exist yet: it appears with a VM in it.
        let dir = roots.run.join("web");
        std::fs::create_dir_all(&dir).expect("run dir");
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        std::fs::write(dir.join("pid"), child.id().to_string()).expect("pid file");
        // Let the watch follow the new pid file before the kill.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(events.try_recv().is_err(), "nothing ended yet");
        child.kill().expect("kill");
        child.wait().expect("reaped");
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("announced within 5 s")
            .expect("an event");
        assert_eq!(
            event,
            HostEvent::Object(ResourceId::new(
                Kind::VirtualMachine,
                Name::parse("web").unwrap()
            ))
        );
    }
}
