//! Garbage collection of the image store: removing the unpacked layers, blobs, source
//! records and unfinished imports that no container on this host uses any more.
//!
//! # Why it looks like this
//!
//! The store only grows: every image ever imported keeps its layers (often gigabytes)
//! after the last container using it was replaced or pruned. What is in use is known
//! exactly from the containers' bundles: every create writes the image it mounted into
//! its bundle ([`BUNDLE_IMAGE_FILE`]: the image id and its layer directories), so the
//! containers gitvisor has on this host — running, stopped, or whose create failed,
//! declared or not — name everything that must stay. A layer of a running container is
//! never removed, whatever the manifests say. Everything else is a cache: an image that
//! a later apply needs again is imported again.
//!
//! Blobs are kept when they are a used image's config, or a manifest (or index) leading
//! to one; they are small JSON documents, read up to a bound.
//!
//! # Concurrency
//!
//! Every import holds a shared `flock` on [`LOCK_FILE`] ([`ImportLock`]); a collection
//! holds it exclusively and gives up at once when an import is under way, so an image
//! being pulled is never collected half-way. A container created between an import and
//! its bundle's record is protected by the grace period in the controller's automatic
//! collection; `gitvisor image prune` collects at once, and a create that loses that race
//! fails with a clear message and imports again at the next apply.
//!
//! # Grace period
//!
//! The controller collects automatically ([`Policy::After`]): something is removed only
//! once it has been seen unreferenced for the whole grace period (default
//! [`DEFAULT_GRACE`]), remembered across runs in [`UNREFERENCED_FILE`], and its own
//! modification time is that old too (a freshly imported layer waits). `gitvisor image
//! prune` removes everything unreferenced at once ([`Policy::Now`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::PreparedImage;

/// The image a container's root file system was made from, written in its bundle.
pub const BUNDLE_IMAGE_FILE: &str = "image.json";
/// The store's lock: shared by imports, exclusive for a collection.
pub const LOCK_FILE: &str = "store.lock";
/// When each unreferenced thing was first seen unreferenced (seconds since the epoch).
pub const UNREFERENCED_FILE: &str = "unreferenced.json";
/// How long something stays unreferenced before the controller removes it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The most bytes of a blob read to learn whether it is a manifest or an index.
const MAX_BLOB_READ: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("image store {}: cannot {operation} {}", store.display(), path.display())]
    Io {
        store: PathBuf,
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "image store {}: an image import is under way; prune again when the apply is done",
        store.display()
    )]
    Busy { store: PathBuf },
    #[error(
        "image store {}: cannot tell which image container {id} uses: its bundle {} has no {BUNDLE_IMAGE_FILE} (made by an older gitvisor) and its root file system is mounted; apply it again (a replace writes the record) or remove it, then prune again",
        store.display(),
        bundle.display()
    )]
    UnknownBundle {
        store: PathBuf,
        id: String,
        bundle: PathBuf,
    },
}

/// When unreferenced things go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// At once (`gitvisor image prune`).
    Now,
    /// Once unreferenced for this long (the controller).
    After(Duration),
}

/// One thing removed (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// `layer`, `blob`, `source` (a cached resolution of a local image path) or `tmp` (an
    /// unfinished import).
    pub kind: &'static str,
    /// The digest (hex) or file name.
    pub name: String,
    pub bytes: u64,
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub dry_run: bool,
    pub removed: Vec<Removed>,
    /// Layers kept because a container uses them.
    pub layers_in_use: usize,
    /// Unreferenced, but within the grace period.
    pub waiting: usize,
}

impl Report {
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }
}

/// A shared hold on the store for one import; a collection waits for none.
#[derive(Debug)]
pub struct ImportLock {
    _lock: Flock<File>,
}

impl ImportLock {
    /// Takes the store's lock shared (blocking while a collection runs: a second or so).
    pub fn take(root: &Path) -> std::io::Result<ImportLock> {
        let file = open_lock(root)?;
        let lock = Flock::lock(file, FlockArg::LockShared).map_err(|(_, errno)| errno)?;
        Ok(ImportLock { _lock: lock })
    }
}

fn open_lock(root: &Path) -> std::io::Result<File> {
    fs::create_dir_all(root)?;
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(LOCK_FILE))
}

/// What the containers under `bundles` use: layer directories and image ids.
#[derive(Debug, Default)]
struct InUse {
    layers: BTreeSet<PathBuf>,
    images: BTreeSet<String>,
}

/// Collects the store at `root`, keeping what the bundles under `bundles` use.
pub fn collect(
    root: &Path,
    bundles: &Path,
    policy: Policy,
    dry_run: bool,
    now: SystemTime,
) -> Result<Report, GcError> {
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    if !root.is_dir() {
        return Ok(report);
    }
    let io = |operation: &'static str, path: &Path| {
        let (store, path) = (root.to_path_buf(), path.to_path_buf());
        move |source| GcError::Io {
            store,
            operation,
            path,
            source,
        }
    };
    let file = open_lock(root).map_err(io("open the lock", &root.join(LOCK_FILE)))?;
    let _lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| GcError::Busy {
        store: root.to_path_buf(),
    })?;
    let in_use = in_use(root, bundles)?;

    let mut candidates: Vec<(String, &'static str, PathBuf)> = Vec::new();
    let layers = root.join("layers/sha256");
    for (name, path) in entries(&layers).map_err(io("read", &layers))? {
        if in_use.layers.contains(&path) {
            report.layers_in_use += 1;
        } else {
            candidates.push((format!("layer:{name}"), "layer", path));
        }
    }
    let blobs = root.join("blobs/sha256");
    let blob_entries = entries(&blobs).map_err(io("read", &blobs))?;
    let kept_blobs = kept_blobs(&blob_entries, &in_use.images);
    for (name, path) in blob_entries {
        if !kept_blobs.contains(&name) {
            candidates.push((format!("blob:{name}"), "blob", path));
        }
    }
    let sources = root.join("sources");
    for (name, path) in entries(&sources).map_err(io("read", &sources))? {
        let used = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|record| {
                serde_json::from_value::<PreparedImage>(record.get("image")?.clone()).ok()
            })
            .is_some_and(|image| image.lowers.iter().all(|l| in_use.layers.contains(l)));
        if !used {
            candidates.push((format!("source:{name}"), "source", path));
        }
    }
    let tmp = root.join("tmp");
    for (name, path) in entries(&tmp).map_err(io("read", &tmp))? {
        candidates.push((format!("tmp:{name}"), "tmp", path));
    }

    let due: BTreeSet<String> = match policy {
        Policy::Now => candidates.iter().map(|(key, _, _)| key.clone()).collect(),
        Policy::After(grace) => {
            let record = root.join(UNREFERENCED_FILE);
            let previous: BTreeMap<String, u64> = fs::read(&record)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default();
            let seen: Vec<(String, SystemTime)> = candidates
                .iter()
                .map(|(key, _, path)| {
                    let modified = fs::symlink_metadata(path)
                        .and_then(|m| m.modified())
                        .unwrap_or(now);
                    (key.clone(), modified)
                })
                .collect();
            let (due, remembered) = due_after_grace(&seen, &previous, now, grace);
            report.waiting = remembered.len() - due.len();
            if !dry_run {
                let remembered: BTreeMap<&String, &u64> = remembered
                    .iter()
                    .filter(|(key, _)| !due.contains(*key))
                    .collect();
                let bytes = serde_json::to_vec(&remembered).unwrap_or_default();
                fs::write(&record, bytes).map_err(io("write", &record))?;
            }
            due
        }
    };
    for (key, kind, path) in candidates {
        if !due.contains(&key) {
            continue;
        }
        let bytes = size_of(&path);
        if !dry_run {
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match removed {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", &path)(error));
                }
                _ => {}
            }
        }
        let name = key.split_once(':').map(|(_, n)| n).unwrap_or(&key);
        report.removed.push(Removed {
            kind,
            name: name.to_owned(),
            bytes,
        });
    }
    Ok(report)
}

/// Which of the unreferenced things `seen` (key, modification time) are due: seen
/// unreferenced since at least `grace` ago (by `previous`, the first sightings so far)
/// and not modified within it. Answers them and the first sightings to remember (every
/// one in `seen`; what is referenced again is forgotten).
pub fn due_after_grace(
    seen: &[(String, SystemTime)],
    previous: &BTreeMap<String, u64>,
    now: SystemTime,
    grace: Duration,
) -> (BTreeSet<String>, BTreeMap<String, u64>) {
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut due = BTreeSet::new();
    let mut remembered = BTreeMap::new();
    for (key, modified) in seen {
        let first = previous.get(key).copied().unwrap_or(now_secs);
        remembered.insert(key.clone(), first);
        let unreferenced_for = Duration::from_secs(now_secs.saturating_sub(first));
        let untouched_for = now.duration_since(*modified).unwrap_or_default();
        if unreferenced_for >= grace && untouched_for >= grace {
            due.insert(key.clone());
        }
    }
    (due, remembered)
}

/// The layers and images the bundles under `bundles` record; a bundle without a record
/// whose root file system is mounted makes the collection refuse (it cannot tell).
fn in_use(root: &Path, bundles: &Path) -> Result<InUse, GcError> {
    let mut in_use = InUse::default();
    let Ok(dirs) = fs::read_dir(bundles) else {
        return Ok(in_use);
    };
    for dir in dirs.flatten() {
        let bundle = dir.path();
        match fs::read(bundle.join(BUNDLE_IMAGE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<PreparedImage>(&bytes).ok())
        {
            Some(image) => {
                in_use.layers.extend(image.lowers);
                in_use.images.insert(image.id);
            }
            None if is_mount_point(&bundle.join("rootfs")) => {
                return Err(GcError::UnknownBundle {
                    store: root.to_path_buf(),
                    id: dir.file_name().to_string_lossy().into_owned(),
                    bundle,
                });
            }
            None => {}
        }
    }
    Ok(in_use)
}

fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(path), path.parent().map(fs::metadata)) {
        (Ok(dir), Some(Ok(parent))) => dir.dev() != parent.dev(),
        _ => false,
    }
}

/// The entries of `dir` (none when it does not exist), by name.
fn entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// The blobs (hex names) to keep: the configs of `images` (`sha256:…` ids), and the
/// manifests and indexes leading to one.
fn kept_blobs(blobs: &[(String, PathBuf)], images: &BTreeSet<String>) -> BTreeSet<String> {
    let mut kept: BTreeSet<String> = images
        .iter()
        .filter_map(|id| id.strip_prefix("sha256:"))
        .map(str::to_owned)
        .collect();
    let documents: Vec<(String, serde_json::Value)> = blobs
        .iter()
        .filter_map(|(name, path)| {
            let mut bytes = Vec::new();
            File::open(path)
                .ok()?
                .take(MAX_BLOB_READ)
                .read_to_end(&mut bytes)
                .ok()?;
            Some((name.clone(), serde_json::from_slice(&bytes).ok()?))
        })
        .collect();
    let hex = |digest: &serde_json::Value| {
        digest
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(str::to_owned)
    };
    // Manifests name a config; indexes name manifests (or indexes): a few rounds reach
    // every document that leads to a kept config.
    for _ in 0..4 {
        for (name, document) in &documents {
            let leads = hex(&document["config"]["digest"]).is_some_and(|c| kept.contains(&c))
                || document["manifests"].as_array().is_some_and(|list| {
                    list.iter()
                        .filter_map(|m| hex(&m["digest"]))
                        .any(|m| kept.contains(&m))
                });
            if leads {
                kept.insert(name.clone());
            }
        }
    }
    kept
}

/// The bytes of the regular files at or under `path`, each inode once.
fn size_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn something_goes_only_after_being_unreferenced_and_untouched_for_the_grace_period() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let old = start - 48 * HOUR;
        let seen = vec![("layer:a".to_owned(), old), ("layer:b".to_owned(), start)];
        // First sighting: nothing is due, both are remembered from now.
        let (due, remembered) = due_after_grace(&seen, &BTreeMap::new(), start, 24 * HOUR);
        assert!(due.is_empty(), "{due:?}");
        assert_eq!(remembered.len(), 2);
        // 23 hours later: still waiting.
        let later = start + 23 * HOUR;
        let (due, remembered) = due_after_grace(&seen, &remembered, later, 24 * HOUR);
        assert!(due.is_empty(), "{due:?}");
        // 24 hours after the first sighting: both unreferenced and untouched that long.
        let day = start + 24 * HOUR;
        let (due, _) = due_after_grace(&seen, &remembered, day, 24 * HOUR);
        assert_eq!(due, ["layer:a", "layer:b"].map(String::from).into());
        // Referenced again in between (absent from one collection's `seen`): it starts over.
        let (_, without_a) = due_after_grace(&seen[1..], &remembered, later, 24 * HOUR);
        let (due, _) = due_after_grace(&seen, &without_a, day, 24 * HOUR);
        assert_eq!(due, ["layer:b"].map(String::from).into());
        // Modified recently (a fresh import), however long it was remembered: it waits.
        let fresh = vec![("layer:c".to_owned(), day - HOUR)];
        let previous = [("layer:c".to_owned(), 0)].into();
        assert!(
            due_after_grace(&fresh, &previous, day, 24 * HOUR)
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_collection_keeps_what_a_bundle_uses_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        let bundles = dir.path().join("bundles");
        let layer = |hex: &str| root.join("layers/sha256").join(hex);
        for (hex, bytes) in [("aa", 10), ("bb", 20)] {
            fs::create_dir_all(layer(hex)).unwrap();
            fs::write(layer(hex).join("file"), vec![0u8; bytes]).unwrap();
        }
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(blobs.join("c1"), b"{}").unwrap();
        fs::write(blobs.join("m1"), br#"{"config":{"digest":"sha256:c1"}}"#).unwrap();
        fs::write(
            blobs.join("i1"),
            br#"{"manifests":[{"digest":"sha256:m1"}]}"#,
        )
        .unwrap();
        fs::write(blobs.join("m2"), br#"{"config":{"digest":"sha256:c2"}}"#).unwrap();
        fs::create_dir_all(bundles.join("web")).unwrap();
        let image = PreparedImage {
            id: "sha256:c1".into(),
            lowers: vec![layer("aa")],
            defaults: Default::default(),
        };
        fs::write(
            bundles.join("web").join(BUNDLE_IMAGE_FILE),
            serde_json::to_vec(&image).unwrap(),
        )
        .unwrap();

        let dry = collect(&root, &bundles, Policy::Now, true, SystemTime::now()).unwrap();
        assert!(layer("bb").exists(), "a dry run removes nothing");
        let report = collect(&root, &bundles, Policy::Now, false, SystemTime::now()).unwrap();
        assert_eq!(dry.removed, report.removed);
        let mut removed: Vec<_> = report.removed.iter().map(|r| r.name.as_str()).collect();
        removed.sort();
        assert_eq!(removed, ["bb", "m2"]);
        assert_eq!(report.bytes(), 20 + 33);
        assert!(layer("aa").join("file").exists());
        assert!(!layer("bb").exists());
        for kept in ["c1", "m1", "i1"] {
            assert!(blobs.join(kept).exists(), "{kept}");
        }
        assert_eq!(report.layers_in_use, 1);

        // An import under way: the collection gives up.
        let _import = ImportLock::take(&root).unwrap();
        assert!(matches!(
            collect(&root, &bundles, Policy::Now, false, SystemTime::now()),
            Err(GcError::Busy { .. })
        ));
    }
}
