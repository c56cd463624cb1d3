//! [`Store`]: the read-write store over `<state_dir>/state.redb`, one process at a time.
//! See the module docs of [`super`] for the why and the order of steps.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{Builder, ConcurrencyMode, Database, DatabaseError, StorageError, WriteTransaction};

use super::contain::contain;
use super::error::StoreError;
use super::private;
use super::records::{
    ApplyRecord, Event, Intent, Outcome, OwnedRecord, ResourceStatus, RevisionRecord, now_unix,
};
use super::tables::{self, Ctx, EVENTS, OWNED, REVISIONS, STATUSES};
use crate::model::ResourceId;

/// The store's file name inside the state dir.
pub const STATE_FILE: &str = "state.redb";

/// The state is small (records per resource, bounded logs); redb's 1 GiB default cache
/// ceiling is not needed on a small host.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The read-write store. Holding it holds redb's writer lock on the file: a second
/// [`Store::open`] of the same state dir, in this or another process, fails with
/// [`StoreError::Locked`] until this one (and every clone of it) is dropped.
///
/// Cloning is cheap and shares the open database, so a clone can be moved to a blocking
/// thread (see [`Store::run_blocking`]).
#[derive(Clone)]
pub struct Store {
    // Dropped before `_closer` (fields drop in order), so the file is stamped after redb
    // closed it.
    db: Arc<Database>,
    path: Arc<Path>,
    _closer: Arc<Closer>,
    /// The open checked every page ([`super::closed`]).
    verified: bool,
}

/// Stamps the file as closed by this process when the last clone of a [`Store`] goes.
struct Closer(Arc<Path>);

impl Drop for Closer {
    fn drop(&mut self) {
        super::closed::closed_now(&self.0);
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens or creates `<state_dir>/state.redb`, creating `state_dir` if needed.
    ///
    /// Steps: create the dir and make it and the store files private; open the file with
    /// a full integrity check (unless this process closed it last and nobody wrote it
    /// since: `closed.rs`), which also repairs a file that a killed or crashed writer
    /// left unclean (that is not corruption, and keeps every committed record); if the
    /// file is corrupt (checksums fail, or redb panics on it), rename it to
    /// `state.redb.corrupt-<unix-seconds>` (kept for inspection), warn, and create a fresh
    /// one; then create any missing table and check the schema version. Starting empty is
    /// safe: drivers only delete or change objects the store records as owned, so a lost
    /// store can make gitvisor report conflicts, never delete.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        private::prepare_dir(state_dir)?;
        let path = state_dir.join(STATE_FILE);
        let verify = !super::closed::unchanged_since_closed(&path);
        let db = match open_writable(&path, verify) {
            Ok(db) => db,
            Err(err) if err.is_corrupt() => {
                let aside = private::move_aside(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %err,
                    "state store is damaged; moved it aside and starting with an empty store \
                     (objects gitvisor created will show as conflicts until adopted; nothing is pruned)"
                );
                open_writable(&path, true).map_err(|err| err.into_error(&path))?
            }
            Err(err) => return Err(err.into_error(&path)),
        };
        let path: Arc<Path> = Arc::from(path);
        let store = Store {
            db: Arc::new(db),
            _closer: Arc::new(Closer(path.clone())),
            path,
            verified: verify,
        };
        if !tables::initialised(store.db.as_ref()) {
            store.write("initialise", tables::initialise)?;
        }
        Ok(store)
    }

    /// The store file, `<state_dir>/state.redb`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this open checked every page of the file: always, unless this process
    /// closed the file last and nobody wrote it since ([`super::closed`]).
    pub fn verified_on_open(&self) -> bool {
        self.verified
    }

    /// Every owned record, pending intents included (`pending: true`).
    pub fn owned(&self) -> Result<BTreeMap<ResourceId, OwnedRecord>, StoreError> {
        self.read("read owned records", |db, path, op| {
            tables::read_keyed(db, path, OWNED, op)
        })
    }

    /// Write-ahead intents, in one transaction, before the objects are created: if the
    /// process dies between a create and the ownership marker on the object, the next run
    /// still knows the object is ours.
    ///
    /// A new record is `pending` with an empty `spec_hash`. An existing record (re-creating
    /// an object already owned) becomes `pending` with the intent's revision and keeps its
    /// last confirmed `spec_hash`. Each records what the object depends on (for an
    /// existing record, together with what it depended on before); plain ids record
    /// none known.
    pub fn record_intents<I: Clone + Into<Intent>>(
        &self,
        intents: &[I],
        revision: &str,
    ) -> Result<(), StoreError> {
        if intents.is_empty() {
            return Ok(());
        }
        let intents: Vec<Intent> = intents.iter().cloned().map(Into::into).collect();
        let intents = intents.as_slice();
        let now = now_unix();
        self.write("record intents", |txn, ctx| {
            tables::write_intents(txn, ctx, intents, revision, now)
        })
    }

    /// Records a batch of outcomes in one transaction: `Applied` upserts a confirmed
    /// (not pending) owned record, `Forgotten` removes it.
    pub fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = now_unix();
        self.write("record outcomes", |txn, ctx| {
            tables::write_outcomes(txn, ctx, outcomes, now)
        })
    }

    /// Sets (replaces) the status of each resource, in one transaction.
    pub fn set_statuses(
        &self,
        statuses: &[(ResourceId, ResourceStatus)],
    ) -> Result<(), StoreError> {
        if statuses.is_empty() {
            return Ok(());
        }
        self.write("set statuses", |txn, ctx| {
            tables::write_statuses(txn, ctx, statuses)
        })
    }

    /// The last status of every resource that has one.
    pub fn statuses(&self) -> Result<BTreeMap<ResourceId, ResourceStatus>, StoreError> {
        self.read("read statuses", |db, path, op| {
            tables::read_keyed(db, path, STATUSES, op)
        })
    }

    /// Removes the statuses of resources no longer declared, in one transaction.
    pub fn remove_statuses(&self, ids: &[ResourceId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write("remove statuses", |txn, ctx| {
            tables::delete_statuses(txn, ctx, ids)
        })
    }

    /// Appends an applied revision to the history, dropping the oldest beyond
    /// [`MAX_REVISIONS`](super::MAX_REVISIONS), in one transaction.
    pub fn record_revision(&self, rev: &RevisionRecord) -> Result<(), StoreError> {
        self.write("record revision", |txn, ctx| {
            tables::write_revision(txn, ctx, rev)
        })
    }

    /// Records everything one apply learned, in ONE transaction: its outcomes, the
    /// statuses it set and removed, the revision and the events. A crash or a failed
    /// commit leaves all of it or none of it, so `status` never shows a revision whose
    /// ownership records are missing, or the reverse.
    pub fn record_apply(&self, record: &ApplyRecord) -> Result<(), StoreError> {
        let now = now_unix();
        self.write("record apply", |txn, ctx| {
            tables::write_outcomes(txn, ctx, &record.outcomes, now)?;
            tables::write_statuses(txn, ctx, &record.statuses)?;
            tables::delete_statuses(txn, ctx, &record.removed_statuses)?;
            tables::write_revision(txn, ctx, &record.revision)?;
            tables::write_events(txn, ctx, &record.events)
        })
    }

    /// The revision history, newest first.
    pub fn revisions(&self) -> Result<Vec<RevisionRecord>, StoreError> {
        self.read("read revisions", |db, path, op| {
            tables::read_newest(db, path, REVISIONS, usize::MAX, op)
        })
    }

    /// The most recently recorded revision.
    pub fn last_revision(&self) -> Result<Option<RevisionRecord>, StoreError> {
        let mut newest = self.read("read last revision", |db, path, op| {
            tables::read_newest(db, path, REVISIONS, 1, op)
        })?;
        Ok(newest.pop())
    }

    /// Appends events in order, dropping the oldest beyond
    /// [`MAX_EVENTS`](super::MAX_EVENTS), in one transaction.
    pub fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write("append events", |txn, ctx| {
            tables::write_events(txn, ctx, events)
        })
    }

    /// Up to `limit` events, newest first.
    pub fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read("read events", |db, path, op| {
            tables::read_newest(db, path, EVENTS, limit, op)
        })
    }

    fn read<T>(
        &self,
        operation: &'static str,
        body: impl FnOnce(&Database, &Path, &'static str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        contain(&self.path, operation, || {
            body(&self.db, &self.path, operation)
        })
    }

    /// Runs `body` in one write transaction and commits it; an error (or a panic inside
    /// redb) drops (aborts) the transaction, so nothing of it is written.
    fn write<F>(&self, operation: &'static str, body: F) -> Result<(), StoreError>
    where
        F: FnOnce(&WriteTransaction, &Ctx<'_>) -> Result<(), StoreError>,
    {
        let ctx = Ctx {
            path: &self.path,
            operation,
        };
        contain(&self.path, operation, || {
            let txn = self.db.begin_write().map_err(|e| ctx.db(e))?;
            body(&txn, &ctx)?;
            txn.commit().map_err(|e| ctx.db(e))
        })
    }
}

/// Why a writable open failed.
#[derive(Debug)]
enum OpenFailure {
    Redb(DatabaseError),
    /// redb panicked on the file's bytes.
    Panicked(StoreError),
    /// Creating or opening the file itself (permissions, I/O).
    File(StoreError),
}

impl OpenFailure {
    /// The file is not a readable redb database, so it is moved aside. A file that merely
    /// needs repair is never here: the writable open repairs it. A lock held by another
    /// process, permission and other I/O errors are not corruption: the file is left
    /// alone and the error returned.
    fn is_corrupt(&self) -> bool {
        match self {
            OpenFailure::Redb(err) => match err {
                DatabaseError::Storage(StorageError::Corrupted(_))
                // gitvisor only ever wrote the current format: an old version byte is damage.
                | DatabaseError::UpgradeRequired(_) => true,
                DatabaseError::Storage(StorageError::Io(io)) => matches!(
                    io.kind(),
                    io::ErrorKind::InvalidData
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::InvalidInput
                ),
                _ => false,
            },
            OpenFailure::Panicked(_) => true,
            OpenFailure::File(_) => false,
        }
    }

    fn into_error(self, path: &Path) -> StoreError {
        match self {
            OpenFailure::Redb(
                DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch,
            ) => StoreError::Locked {
                path: path.to_path_buf(),
            },
            OpenFailure::Redb(source) => StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(source),
            },
            OpenFailure::Panicked(err) | OpenFailure::File(err) => err,
        }
    }
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenFailure::Redb(err) => err.fmt(f),
            OpenFailure::Panicked(err) | OpenFailure::File(err) => err.fmt(f),
        }
    }
}

fn open_writable(path: &Path, verify: bool) -> Result<Database, OpenFailure> {
    let file = private::open_file(path).map_err(OpenFailure::File)?;
    let mut builder = Builder::new();
    builder
        // One writer; other processes may open the file too (an older `gitvisor status`
        // reads it in place).
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .set_cache_size(CACHE_BYTES)
        // Verify every page's checksum on open (and repair an unclean file): a file
        // damaged outside redb is then reported as corrupt instead of being trusted.
        // Skipped for the file this process closed last, untouched since
        // (`closed.rs`); redb still repairs an unclean file.
        .set_check_integrity_on_open(verify);
    let opened = contain(path, "open", || {
        Ok(FileBackend::new(file).and_then(|backend| builder.create_with_backend(backend)))
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(err)) => Err(OpenFailure::Redb(err)),
        Err(panicked) => Err(OpenFailure::Panicked(panicked)),
    }
}
