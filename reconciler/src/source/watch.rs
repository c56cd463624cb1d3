//! Watching a manifest directory: every change below it that could change the revision
//! calls back at once; the controller debounces the burst an editor's save makes.
//!
//! inotify (through `notify`) watches the tree recursively, adding subdirectories as they
//! appear. Reads (access events) and names the loader never reads (hidden files, editor
//! backups `name~`, vim's `4913` probe) are ignored, so opening a file or an editor's
//! swap file does not start a reconcile. A change that slips through costs one load: the
//! content hash of an unchanged tree is the revision already applied, and nothing runs.
//!
//! Each event says whether it ends a write ([`SourceChange::Written`]: a file closed after
//! writing, inotify's `IN_CLOSE_WRITE`) or may be the middle of one
//! ([`SourceChange::Changed`]: a truncate, a write, a rename, a delete). The controller
//! waits a short quiet after the first and a longer one after the second, so a save is
//! applied within milliseconds while a file still open for writing, or an editor's
//! write-and-rename in progress, is not read half done.

use std::path::Path;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::SourceError;

/// Keeps the watch alive; dropping it stops watching.
pub struct DirWatcher {
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirWatcher")
    }
}

/// What one event of the watch says about the files below the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChange {
    /// Something changed, possibly in the middle of a write (a truncate, a write, a
    /// rename, a delete, a new directory, a watch error).
    Changed,
    /// A file was closed after writing: that writer is done.
    Written,
}

/// Watches `dir` recursively; `on_change` runs (on the watcher's own thread) for each
/// relevant event. A watch error is passed on as a change too: the controller then loads
/// the directory and sees for itself.
pub fn watch(
    dir: &Path,
    on_change: impl Fn(SourceChange) + Send + 'static,
) -> Result<DirWatcher, SourceError> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                if let Some(change) = classify(&event) {
                    on_change(change);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the directory watch reported an error; reloading the directory");
                on_change(SourceChange::Changed);
            }
        }
    })
    .map_err(|source| SourceError::Watch {
        path: dir.to_owned(),
        source,
    })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|source| SourceError::Watch {
            path: dir.to_owned(),
            source,
        })?;
    Ok(DirWatcher { _watcher: watcher })
}

/// What `event` says about what the loader reads: nothing (a read, an editor's own
/// file), a change, or the end of a write.
fn classify(event: &notify::Event) -> Option<SourceChange> {
    let change = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => SourceChange::Written,
        EventKind::Access(_) => return None,
        _ => SourceChange::Changed,
    };
    (event.need_rescan() || event.paths.is_empty() || event.paths.iter().any(|p| read_by_loader(p)))
        .then_some(change)
}

/// Whether the loader could read `path`, or something below it (a directory).
fn read_by_loader(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    !(name.starts_with('.') || name.ends_with('~') || name == "4913")
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};
    use std::path::PathBuf;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn saves_count_and_reads_and_editor_files_do_not() {
        let modify = EventKind::Modify(ModifyKind::Any);
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            classify(&event(modify, "/m/bridges.yaml")),
            Some(SourceChange::Changed)
        );
        assert_eq!(
            classify(&event(EventKind::Create(CreateKind::Folder), "/m/hosts")),
            Some(SourceChange::Changed)
        );
        assert_eq!(
            classify(&event(closed, "/m/bridges.yaml")),
            Some(SourceChange::Written)
        );
        for read in [
            AccessKind::Any,
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
        ] {
            assert_eq!(
                classify(&event(EventKind::Access(read), "/m/bridges.yaml")),
                None
            );
        }
        for ignored in ["/m/.bridges.yaml.swp", "/m/bridges.yaml~", "/m/4913"] {
            assert_eq!(classify(&event(modify, ignored)), None, "{ignored}");
            assert_eq!(classify(&event(closed, ignored)), None, "{ignored}");
        }
    }

    #[test]
    fn a_save_ends_with_a_written_event() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let _watch = watch(dir.path(), move |change| {
            let _ = sender.send(change);
        })
        .unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: Bridge\n").unwrap();
        let mut seen = Vec::new();
        while let Ok(change) = receiver.recv_timeout(std::time::Duration::from_secs(10)) {
            seen.push(change);
            if change == SourceChange::Written {
                break;
            }
        }
        assert_eq!(seen.first(), Some(&SourceChange::Changed), "{seen:?}");
        assert_eq!(seen.last(), Some(&SourceChange::Written), "{seen:?}");
    }

    #[test]
    fn a_write_below_the_directory_calls_back() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let _watch = watch(dir.path(), move |_| {
            let _ = sender.send(());
        })
        .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("creating a subdirectory is reported");
        // The watch on the new subdirectory is added when its creation is handled, so
        // the write is repeated until one is reported, instead of guessing a delay.
        let reported = (0..20).any(|round| {
            while receiver.try_recv().is_ok() {}
            std::fs::write(dir.path().join("sub/b.yaml"), format!("{round}")).unwrap();
            receiver
                .recv_timeout(std::time::Duration::from_millis(500))
                .is_ok()
        });
        assert!(reported, "a file in a new subdirectory is reported");
    }
}
