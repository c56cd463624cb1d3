//! Watching a manifest directory: every change below it that could change the revision
//! calls back at once; the controller debounces the burst an editor's save makes.
//!
//! inotify (through `notify`) watches the tree recursively, adding subdirectories as they
//! appear. Reads (access events) and names the loader never reads (hidden files, editor
//! backups `name~`, vim's `4913` probe) are ignored, so opening a file or an editor's
//! swap file does not start a reconcile. A change that slips through costs one load: the
//! content hash of an unchanged tree is the revision already applied, and nothing runs.

use std::path::Path;

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

/// Watches `dir` recursively; `on_change` runs (on the watcher's own thread) for each
/// relevant event. A watch error is passed on as a change too: the controller then loads
/// the directory and sees for itself.
pub fn watch(dir: &Path, on_change: impl Fn() + Send + 'static) -> Result<DirWatcher, SourceError> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if !relevant(&event) => {}
            Ok(_) => on_change(),
            Err(error) => {
                tracing::warn!(%error, "the directory watch reported an error; reloading the directory");
                on_change();
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

/// Whether `event` may change what the loader reads.
fn relevant(event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.need_rescan() || event.paths.is_empty() || event.paths.iter().any(|p| read_by_loader(p))
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
    use notify::event::{AccessKind, CreateKind, ModifyKind};
    use std::path::PathBuf;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn saves_count_and_reads_and_editor_files_do_not() {
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(relevant(&event(modify, "/m/bridges.yaml")));
        assert!(relevant(&event(
            EventKind::Create(CreateKind::Folder),
            "/m/hosts"
        )));
        assert!(!relevant(&event(
            EventKind::Access(AccessKind::Any),
            "/m/bridges.yaml"
        )));
        for ignored in ["/m/.bridges.yaml.swp", "/m/bridges.yaml~", "/m/4913"] {
            assert!(!relevant(&event(modify, ignored)), "{ignored}");
        }
    }

    #[test]
    fn a_write_below_the_directory_calls_back() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let _watch = watch(dir.path(), move || {
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
