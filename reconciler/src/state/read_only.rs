//! [`ReadOnlyStore`]: what `status` and `plan` read. It never writes the store file, and
//! shows exactly what the next writable open will find: see [`super::snapshot`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use redb::Database;

use super::contain::contain;
use super::error::StoreError;
use super::records::{Event, OwnedRecord, ResourceStatus, RevisionRecord};
use super::snapshot;
use super::store::STATE_FILE;
use super::tables::{self, EVENTS, OWNED, REVISIONS, STATUSES};
use crate::model::ResourceId;

/// A read-only view of the store for `status` and `plan`, which must not write.
///
/// It reads a verified in-memory copy of the file taken at [`ReadOnlyStore::open`], so
/// every read of one view sees the same instant, even while a [`Store`](super::Store) in
/// another process commits. If the file does not exist the view is empty and nothing is
/// created; if it is damaged the view is empty too (what the next writable open starts
/// from, after moving the file aside), with [`ReadOnlyStore::damage`] saying why.
///
/// Cloning is cheap (the copy is shared), so a clone can be moved to a blocking thread
/// (see [`ReadOnlyStore::run_blocking`]).
#[derive(Clone)]
pub struct ReadOnlyStore {
    /// `None`: no store file yet, or a damaged one.
    db: Option<Arc<Database>>,
    path: Arc<Path>,
    /// Why a store file that exists is shown as empty.
    damage: Option<Arc<str>>,
}

impl fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnlyStore")
            .field("path", &self.path)
            .field("exists", &self.db.is_some())
            .field("damage", &self.damage)
            .finish()
    }
}

impl ReadOnlyStore {
    /// Opens a verified, repaired in-memory copy of `<state_dir>/state.redb`, or an empty
    /// view if it does not exist or is damaged (with a warning naming the file). Creates
    /// nothing and never modifies the file.
    ///
    /// Errors: the file cannot be read (permissions), it never stood still long enough to
    /// copy, or it was written by a newer gitvisor ([`StoreError::UnsupportedSchema`]).
    pub fn open(state_dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let path: Arc<Path> = Arc::from(state_dir.join(STATE_FILE));
        let Some(bytes) = snapshot::read_consistent(&path)? else {
            return Ok(ReadOnlyStore {
                db: None,
                path,
                damage: None,
            });
        };
        let opened = contain(&path, "open a private copy", || {
            let db = snapshot::open_in_memory(&bytes).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
            tables::check_schema(&db, &path)?;
            Ok(db)
        });
        match opened {
            Ok(db) => Ok(ReadOnlyStore {
                db: Some(Arc::new(db)),
                path,
                damage: None,
            }),
            Err(err @ StoreError::UnsupportedSchema { .. }) => Err(err),
            Err(err) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "state store is damaged; showing it as empty. The next apply moves it aside \
                     and starts with an empty store: objects gitvisor created show as conflicts \
                     until adopted, and nothing is pruned"
                );
                Ok(ReadOnlyStore {
                    db: None,
                    path,
                    damage: Some(Arc::from(error_chain(&err))),
                })
            }
        }
    }

    /// The store file, `<state_dir>/state.redb`, whether or not it exists.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a store file was found and read (`false`: the view is empty).
    pub fn exists(&self) -> bool {
        self.db.is_some()
    }

    /// Why a store file that exists is shown as empty: it is damaged (the message names
    /// the file and redb's finding). `None` when the file was read, or does not exist.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// See [`Store::owned`](super::Store::owned).
    pub fn owned(&self) -> Result<BTreeMap<ResourceId, OwnedRecord>, StoreError> {
        self.read("read owned records", BTreeMap::new, |db, path, op| {
            tables::read_keyed(db, path, OWNED, op)
        })
    }

    /// See [`Store::statuses`](super::Store::statuses).
    pub fn statuses(&self) -> Result<BTreeMap<ResourceId, ResourceStatus>, StoreError> {
        self.read("read statuses", BTreeMap::new, |db, path, op| {
            tables::read_keyed(db, path, STATUSES, op)
        })
    }

    /// See [`Store::revisions`](super::Store::revisions).
    pub fn revisions(&self) -> Result<Vec<RevisionRecord>, StoreError> {
        self.read("read revisions", Vec::new, |db, path, op| {
            tables::read_newest(db, path, REVISIONS, usize::MAX, op)
        })
    }

    /// See [`Store::last_revision`](super::Store::last_revision).
    pub fn last_revision(&self) -> Result<Option<RevisionRecord>, StoreError> {
        let mut newest = self.read("read last revision", Vec::new, |db, path, op| {
            tables::read_newest(db, path, REVISIONS, 1, op)
        })?;
        Ok(newest.pop())
    }

    /// See [`Store::events`](super::Store::events).
    pub fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read("read events", Vec::new, |db, path, op| {
            tables::read_newest(db, path, EVENTS, limit, op)
        })
    }

    fn read<T>(
        &self,
        operation: &'static str,
        empty: impl FnOnce() -> T,
        body: impl FnOnce(&Database, &Path, &'static str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.db {
            Some(db) => contain(&self.path, operation, || body(db, &self.path, operation)),
            None => Ok(empty()),
        }
    }
}

/// An error and its causes, `: `-separated, for a message kept after the error is gone.
fn error_chain(err: &StoreError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
