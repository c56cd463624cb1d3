//! What this process knows about the store file it last closed: an open of a file no one
//! has touched since needs no full integrity check.
//!
//! [`Store::open`](super::Store::open) checks every page's checksum, so a file damaged
//! outside redb is reported as corrupt instead of trusted. That check reads the whole
//! file and commits (an `fsync`): about 10 ms with 1000 resources, paid by the
//! controller at every reconcile, because it opens the store for each one and closes it
//! after (so `gitvisor status` and `plan` can read the file in between). A file this
//! process closed cleanly and that nobody has written since is the file it verified and
//! wrote itself, so its next open skips the check. "Nobody has written since" is the
//! file's identity and its size and modification time, stamped right after the close:
//! any write by another process (or a damaged copy put in its place) changes them, and
//! that open checks everything as before. The first open in a process always checks; a
//! file left unclean (killed or crashed writer) is repaired by redb on any open.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A file's identity, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    len: u64,
    modified_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Stamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        })
    }
}

/// The stamps of the store files this process closed, by path.
static CLOSED: Mutex<BTreeMap<PathBuf, Stamp>> = Mutex::new(BTreeMap::new());

fn closed() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Stamp>> {
    CLOSED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `path` is as this process left it when it last closed it (and forgets that
/// close: the open that asks is about to change the file).
pub(super) fn unchanged_since_closed(path: &Path) -> bool {
    let Some(stamp) = closed().remove(path) else {
        return false;
    };
    Stamp::of(path) == Some(stamp)
}

/// Stamps `path` as closed by this process now; call it once the database is dropped.
pub(super) fn closed_now(path: &Path) {
    match Stamp::of(path) {
        Some(stamp) => {
            closed().insert(path.to_path_buf(), stamp);
        }
        None => {
            closed().remove(path);
        }
    }
}
