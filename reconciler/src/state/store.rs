//! [`Store`] (read-write, one process at a time) and [`ReadOnlyStore`] (for `status` and
//! `plan`), over one redb file. See the module docs of [`super`] for the why.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, StorageError, Table, TableDefinition, TableError,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::StoreError;
use super::records::{Event, Outcome, OwnedRecord, ResourceStatus, RevisionRecord, now_unix};
use crate::model::ResourceId;

/// The store's file name inside the state dir.
pub const STATE_FILE: &str = "state.redb";
/// How many applied revisions [`Store::record_revision`] keeps.
pub const MAX_REVISIONS: usize = 100;
/// How many events [`Store::append_events`] keeps.
pub const MAX_EVENTS: usize = 1000;
/// Version of the table layout and record encoding; bumped on incompatible changes.
pub const SCHEMA_VERSION: u64 = 1;

/// The state is small (records per resource, bounded logs); redb's 1 GiB default cache
/// ceiling is not needed on a small host.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

const OWNED: &str = "owned";
const STATUSES: &str = "statuses";
const REVISIONS: &str = "revisions";
const EVENTS: &str = "events";
const META: &str = "meta";
const SCHEMA_KEY: &str = "schemaVersion";

/// Tables keyed by `Kind/name`, valued by a JSON record.
fn keyed(name: &'static str) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Append-only tables keyed by a sequence number, valued by a JSON record.
fn sequenced(name: &'static str) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(name)
}

fn meta() -> TableDefinition<'static, &'static str, u64> {
    TableDefinition::new(META)
}

/// The read-write store. Holding it holds redb's writer lock on the file: a second
/// [`Store::open`] of the same state dir, in this or another process, fails with
/// [`StoreError::Locked`] until this one is dropped.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens or creates `<state_dir>/state.redb`, creating `state_dir` if needed.
    ///
    /// Steps: create the dir; open the file with a full integrity check; if the file is
    /// corrupt, rename it to `state.redb.corrupt-<unix-seconds>` (kept for inspection),
    /// warn, and create a fresh one; then create any missing table and check the schema
    /// version. Starting empty is safe: drivers only delete or change objects the store
    /// records as owned, so a lost store can make gitvisor report conflicts, never delete.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(STATE_FILE);
        let db = match open_writable(&path) {
            Ok(db) => db,
            Err(err) if is_corrupt(&err) && !is_locked(&err) => {
                let aside = move_aside(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %err,
                    "state store is corrupt; moved it aside and starting with an empty store \
                     (objects gitvisor created will show as conflicts until adopted; nothing is pruned)"
                );
                open_writable(&path).map_err(|source| open_error(&path, source))?
            }
            Err(source) => return Err(open_error(&path, source)),
        };
        let store = Store { db, path };
        store.initialise()?;
        Ok(store)
    }

    /// The store file, `<state_dir>/state.redb`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables a fresh file lacks and records or checks the schema version.
    fn initialise(&self) -> Result<(), StoreError> {
        self.write("initialise", |txn, ctx| {
            for name in [OWNED, STATUSES] {
                txn.open_table(keyed(name)).map_err(|e| ctx.db(e))?;
            }
            for name in [REVISIONS, EVENTS] {
                txn.open_table(sequenced(name)).map_err(|e| ctx.db(e))?;
            }
            let mut table = txn.open_table(meta()).map_err(|e| ctx.db(e))?;
            let found = table
                .get(SCHEMA_KEY)
                .map_err(|e| ctx.db(e))?
                .map(|guard| guard.value());
            match found {
                Some(found) if found > SCHEMA_VERSION => Err(StoreError::UnsupportedSchema {
                    path: ctx.path.to_path_buf(),
                    found,
                    supported: SCHEMA_VERSION,
                }),
                Some(_) => Ok(()),
                None => {
                    table
                        .insert(SCHEMA_KEY, SCHEMA_VERSION)
                        .map_err(|e| ctx.db(e))?;
                    Ok(())
                }
            }
        })
    }

    /// Every owned record, pending intents included (`pending: true`).
    pub fn owned(&self) -> Result<BTreeMap<ResourceId, OwnedRecord>, StoreError> {
        read_keyed(&self.db, &self.path, OWNED, "read owned records")
    }

    /// Write-ahead intents, in one transaction, before the objects are created: if the
    /// process dies between a create and the ownership marker on the object, the next run
    /// still knows the object is ours.
    ///
    /// A new record is `pending` with an empty `spec_hash`. An existing record (re-creating
    /// an object already owned) becomes `pending` with the intent's revision and keeps its
    /// last confirmed `spec_hash`.
    pub fn record_intents(&self, ids: &[ResourceId], revision: &str) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_unix();
        self.write("record intents", |txn, ctx| {
            let mut table = txn.open_table(keyed(OWNED)).map_err(|e| ctx.db(e))?;
            for id in ids {
                let key = id.to_string();
                let existing: Option<OwnedRecord> =
                    match table.get(key.as_str()).map_err(|e| ctx.db(e))? {
                        Some(guard) => Some(ctx.decode(OWNED, &key, guard.value())?),
                        None => None,
                    };
                let record = match existing {
                    Some(previous) => OwnedRecord {
                        revision: revision.to_owned(),
                        updated_unix: now,
                        pending: true,
                        ..previous
                    },
                    None => OwnedRecord {
                        spec_hash: String::new(),
                        revision: revision.to_owned(),
                        updated_unix: now,
                        pending: true,
                    },
                };
                let bytes = ctx.encode(&key, &record)?;
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| ctx.db(e))?;
            }
            Ok(())
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
            let mut table = txn.open_table(keyed(OWNED)).map_err(|e| ctx.db(e))?;
            for outcome in outcomes {
                let key = outcome.id().to_string();
                match outcome {
                    Outcome::Applied {
                        spec_hash,
                        revision,
                        ..
                    } => {
                        let record = OwnedRecord {
                            spec_hash: spec_hash.clone(),
                            revision: revision.clone(),
                            updated_unix: now,
                            pending: false,
                        };
                        let bytes = ctx.encode(&key, &record)?;
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(|e| ctx.db(e))?;
                    }
                    Outcome::Forgotten { .. } => {
                        table.remove(key.as_str()).map_err(|e| ctx.db(e))?;
                    }
                }
            }
            Ok(())
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
            let mut table = txn.open_table(keyed(STATUSES)).map_err(|e| ctx.db(e))?;
            for (id, status) in statuses {
                let key = id.to_string();
                let bytes = ctx.encode(&key, status)?;
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| ctx.db(e))?;
            }
            Ok(())
        })
    }

    /// The last status of every resource that has one.
    pub fn statuses(&self) -> Result<BTreeMap<ResourceId, ResourceStatus>, StoreError> {
        read_keyed(&self.db, &self.path, STATUSES, "read statuses")
    }

    /// Removes the statuses of resources no longer declared, in one transaction.
    pub fn remove_statuses(&self, ids: &[ResourceId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write("remove statuses", |txn, ctx| {
            let mut table = txn.open_table(keyed(STATUSES)).map_err(|e| ctx.db(e))?;
            for id in ids {
                table
                    .remove(id.to_string().as_str())
                    .map_err(|e| ctx.db(e))?;
            }
            Ok(())
        })
    }

    /// Appends an applied revision to the history, dropping the oldest beyond
    /// [`MAX_REVISIONS`], in one transaction.
    pub fn record_revision(&self, rev: &RevisionRecord) -> Result<(), StoreError> {
        self.write("record revision", |txn, ctx| {
            let mut table = txn
                .open_table(sequenced(REVISIONS))
                .map_err(|e| ctx.db(e))?;
            append(&mut table, ctx, std::slice::from_ref(rev))?;
            trim_oldest(&mut table, MAX_REVISIONS).map_err(|e| ctx.db(e))
        })
    }

    /// The revision history, newest first.
    pub fn revisions(&self) -> Result<Vec<RevisionRecord>, StoreError> {
        read_newest(
            &self.db,
            &self.path,
            REVISIONS,
            usize::MAX,
            "read revisions",
        )
    }

    /// The most recently recorded revision.
    pub fn last_revision(&self) -> Result<Option<RevisionRecord>, StoreError> {
        Ok(read_newest(&self.db, &self.path, REVISIONS, 1, "read last revision")?.pop())
    }

    /// Appends events in order, dropping the oldest beyond [`MAX_EVENTS`], in one
    /// transaction.
    pub fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write("append events", |txn, ctx| {
            let mut table = txn.open_table(sequenced(EVENTS)).map_err(|e| ctx.db(e))?;
            append(&mut table, ctx, events)?;
            trim_oldest(&mut table, MAX_EVENTS).map_err(|e| ctx.db(e))
        })
    }

    /// Up to `limit` events, newest first.
    pub fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        read_newest(&self.db, &self.path, EVENTS, limit, "read events")
    }

    /// Runs `body` in one write transaction and commits it; an error from `body` drops
    /// (aborts) the transaction, so nothing of it is written.
    fn write<F>(&self, operation: &'static str, body: F) -> Result<(), StoreError>
    where
        F: FnOnce(&WriteTransaction, &Ctx<'_>) -> Result<(), StoreError>,
    {
        let ctx = Ctx {
            path: &self.path,
            operation,
        };
        let txn = self.db.begin_write().map_err(|e| ctx.db(e))?;
        body(&txn, &ctx)?;
        txn.commit().map_err(|e| ctx.db(e))
    }
}

/// A read-only view of the store for `status` and `plan`, which must not write.
///
/// If the file does not exist the view is empty and nothing is created. It may be opened
/// while a [`Store`] is open in another process (redb's single-writer mode lets readers
/// follow the writer's commits).
pub struct ReadOnlyStore {
    /// `None`: no store file yet, or a corrupt one (which the next [`Store::open`] moves
    /// aside, so the empty view is what the next reconcile will start from).
    db: Option<ReadOnlyDatabase>,
    path: PathBuf,
}

impl fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnlyStore")
            .field("path", &self.path)
            .field("exists", &self.db.is_some())
            .finish()
    }
}

impl ReadOnlyStore {
    /// Opens `<state_dir>/state.redb` read-only, or an empty view if it does not exist.
    /// Creates nothing and never modifies the file.
    pub fn open(state_dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let path = state_dir.join(STATE_FILE);
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(ReadOnlyStore { db: None, path });
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path,
                    source: Box::new(DatabaseError::Storage(StorageError::Io(source))),
                });
            }
        }
        let db = match open_read_only(&path) {
            Ok(db) => Some(db),
            Err(err) if is_corrupt(&err) && !is_locked(&err) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "state store is corrupt; showing it as empty (the next apply moves it aside)"
                );
                None
            }
            Err(source) => return Err(open_error(&path, source)),
        };
        let store = ReadOnlyStore { db, path };
        store.check_schema()?;
        Ok(store)
    }

    /// The store file, `<state_dir>/state.redb`, whether or not it exists.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a store file was found and opened (`false`: the view is empty).
    pub fn exists(&self) -> bool {
        self.db.is_some()
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let ctx = Ctx {
            path: &self.path,
            operation: "check schema version",
        };
        let txn = db.begin_read().map_err(|e| ctx.db(e))?;
        let table = match txn.open_table(meta()) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(ctx.db(e)),
        };
        let found = table
            .get(SCHEMA_KEY)
            .map_err(|e| ctx.db(e))?
            .map(|guard| guard.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => Err(StoreError::UnsupportedSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            }),
            _ => Ok(()),
        }
    }

    /// See [`Store::owned`].
    pub fn owned(&self) -> Result<BTreeMap<ResourceId, OwnedRecord>, StoreError> {
        match &self.db {
            Some(db) => read_keyed(db, &self.path, OWNED, "read owned records"),
            None => Ok(BTreeMap::new()),
        }
    }

    /// See [`Store::statuses`].
    pub fn statuses(&self) -> Result<BTreeMap<ResourceId, ResourceStatus>, StoreError> {
        match &self.db {
            Some(db) => read_keyed(db, &self.path, STATUSES, "read statuses"),
            None => Ok(BTreeMap::new()),
        }
    }

    /// See [`Store::revisions`].
    pub fn revisions(&self) -> Result<Vec<RevisionRecord>, StoreError> {
        match &self.db {
            Some(db) => read_newest(db, &self.path, REVISIONS, usize::MAX, "read revisions"),
            None => Ok(Vec::new()),
        }
    }

    /// See [`Store::last_revision`].
    pub fn last_revision(&self) -> Result<Option<RevisionRecord>, StoreError> {
        match &self.db {
            Some(db) => Ok(read_newest(db, &self.path, REVISIONS, 1, "read last revision")?.pop()),
            None => Ok(None),
        }
    }

    /// See [`Store::events`].
    pub fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        match &self.db {
            Some(db) => read_newest(db, &self.path, EVENTS, limit, "read events"),
            None => Ok(Vec::new()),
        }
    }
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    builder
        // One writer, any number of readers in other processes (`status` beside `run`).
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .set_cache_size(CACHE_BYTES);
    builder
}

fn open_writable(path: &Path) -> Result<Database, DatabaseError> {
    let mut builder = builder();
    // Verify every page's checksum on open: a file damaged outside redb is then reported
    // as corrupt instead of being trusted. The file is small, so this is cheap.
    builder.set_check_integrity_on_open(true);
    builder.create(path)
}

fn open_read_only(path: &Path) -> Result<ReadOnlyDatabase, DatabaseError> {
    builder().open_read_only(path)
}

/// Another process holds the file.
fn is_locked(err: &DatabaseError) -> bool {
    matches!(
        err,
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch
    )
}

/// The file is not a (readable) redb database. Permission and other I/O errors are not
/// corruption: the file is left alone and the error returned.
fn is_corrupt(err: &DatabaseError) -> bool {
    match err {
        DatabaseError::Storage(StorageError::Corrupted(_)) | DatabaseError::RepairAborted => true,
        DatabaseError::Storage(StorageError::Io(io)) => matches!(
            io.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn open_error(path: &Path, source: DatabaseError) -> StoreError {
    if is_locked(&source) {
        StoreError::Locked {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }
}

/// Renames a corrupt store to `<file>.corrupt-<unix-seconds>` (with `-<n>` appended if
/// that name is taken), keeping it for inspection.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stem = format!("{}.corrupt-{}", path.display(), now_unix());
    let mut aside = PathBuf::from(&stem);
    let mut n = 1u32;
    while fs::symlink_metadata(&aside).is_ok() {
        aside = PathBuf::from(format!("{stem}-{n}"));
        n += 1;
    }
    fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
        path: path.to_path_buf(),
        to: aside.clone(),
        source,
    })?;
    Ok(aside)
}

/// Error context of one store operation.
struct Ctx<'a> {
    path: &'a Path,
    operation: &'static str,
}

impl Ctx<'_> {
    fn db(&self, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.to_path_buf(),
            operation: self.operation,
            source: Box::new(source.into()),
        }
    }

    fn encode<T: Serialize>(&self, key: &str, record: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(record).map_err(|source| StoreError::Encode {
            path: self.path.to_path_buf(),
            operation: self.operation,
            key: key.to_owned(),
            source,
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            path: self.path.to_path_buf(),
            operation: self.operation,
            table,
            key: key.to_owned(),
            source,
        })
    }
}

/// Appends `records` after the highest sequence number in `table`.
fn append<T: Serialize>(
    table: &mut Table<'_, u64, &'static [u8]>,
    ctx: &Ctx<'_>,
    records: &[T],
) -> Result<(), StoreError> {
    let last = table
        .last()
        .map_err(|e| ctx.db(e))?
        .map(|(key, _)| key.value());
    let mut next = last.map_or(1, |last| last.saturating_add(1));
    for record in records {
        let bytes = ctx.encode(&next.to_string(), record)?;
        table
            .insert(next, bytes.as_slice())
            .map_err(|e| ctx.db(e))?;
        next = next.saturating_add(1);
    }
    Ok(())
}

/// Removes the oldest entries until at most `keep` remain.
fn trim_oldest(table: &mut Table<'_, u64, &'static [u8]>, keep: usize) -> Result<(), redb::Error> {
    let keep = u64::try_from(keep).unwrap_or(u64::MAX);
    let excess = table.len()?.saturating_sub(keep);
    for _ in 0..excess {
        table.pop_first()?;
    }
    Ok(())
}

/// Every record of a `Kind/name`-keyed table. A missing table reads as empty.
fn read_keyed<T: DeserializeOwned>(
    db: &impl ReadableDatabase,
    path: &Path,
    table: &'static str,
    operation: &'static str,
) -> Result<BTreeMap<ResourceId, T>, StoreError> {
    let ctx = Ctx { path, operation };
    let txn = db.begin_read().map_err(|e| ctx.db(e))?;
    let handle = match txn.open_table(keyed(table)) {
        Ok(handle) => handle,
        Err(TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(ctx.db(e)),
    };
    let mut records = BTreeMap::new();
    for entry in handle.iter().map_err(|e| ctx.db(e))? {
        let (key, value) = entry.map_err(|e| ctx.db(e))?;
        let key = key.value();
        let id: ResourceId = key.parse().map_err(|reason| StoreError::InvalidKey {
            path: path.to_path_buf(),
            operation,
            table,
            key: key.to_owned(),
            reason,
        })?;
        records.insert(id, ctx.decode(table, key, value.value())?);
    }
    Ok(records)
}

/// Up to `limit` records of a sequenced table, newest first. A missing table reads as
/// empty.
fn read_newest<T: DeserializeOwned>(
    db: &impl ReadableDatabase,
    path: &Path,
    table: &'static str,
    limit: usize,
    operation: &'static str,
) -> Result<Vec<T>, StoreError> {
    let ctx = Ctx { path, operation };
    let txn = db.begin_read().map_err(|e| ctx.db(e))?;
    let handle = match txn.open_table(sequenced(table)) {
        Ok(handle) => handle,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(ctx.db(e)),
    };
    let mut records = Vec::new();
    for entry in handle.iter().map_err(|e| ctx.db(e))?.rev().take(limit) {
        let (key, value) = entry.map_err(|e| ctx.db(e))?;
        records.push(ctx.decode(table, &key.value().to_string(), value.value())?);
    }
    Ok(records)
}
