//! The store's table layout and the code that reads and writes it, shared by [`Store`]
//! (over the file) and [`ReadOnlyStore`] (over a verified in-memory copy of it).
//!
//! [`Store`]: super::Store
//! [`ReadOnlyStore`]: super::ReadOnlyStore

use std::collections::BTreeMap;
use std::path::Path;

use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition, TableError,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::StoreError;
use super::records::{Event, Intent, Outcome, OwnedRecord, ResourceStatus, RevisionRecord};
use crate::model::ResourceId;

/// How many applied revisions the store keeps.
pub const MAX_REVISIONS: usize = 100;
/// How many events the store keeps.
pub const MAX_EVENTS: usize = 1000;
/// Version of the table layout and record encoding; bumped on incompatible changes.
pub const SCHEMA_VERSION: u64 = 1;

pub(super) const OWNED: &str = "owned";
pub(super) const STATUSES: &str = "statuses";
pub(super) const REVISIONS: &str = "revisions";
pub(super) const EVENTS: &str = "events";
const META: &str = "meta";
const SCHEMA_KEY: &str = "schemaVersion";

/// Tables keyed by `Kind/name`, valued by a JSON record.
pub(super) fn keyed(name: &'static str) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Append-only tables keyed by a sequence number, valued by a JSON record.
pub(super) fn sequenced(name: &'static str) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(name)
}

fn meta() -> TableDefinition<'static, &'static str, u64> {
    TableDefinition::new(META)
}

/// Error context of one store operation.
pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub operation: &'static str,
}

impl Ctx<'_> {
    pub fn db(&self, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.to_path_buf(),
            operation: self.operation,
            source: Box::new(source.into()),
        }
    }

    pub fn encode<T: Serialize>(&self, key: &str, record: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(record).map_err(|source| StoreError::Encode {
            path: self.path.to_path_buf(),
            operation: self.operation,
            key: key.to_owned(),
            source,
        })
    }

    pub fn decode<T: DeserializeOwned>(
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

    fn unsupported_schema(&self, found: u64) -> StoreError {
        StoreError::UnsupportedSchema {
            path: self.path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        }
    }
}

/// Creates the tables a fresh file lacks and records or checks the schema version.
pub(super) fn initialise(txn: &WriteTransaction, ctx: &Ctx<'_>) -> Result<(), StoreError> {
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
        Some(found) if found > SCHEMA_VERSION => Err(ctx.unsupported_schema(found)),
        Some(_) => Ok(()),
        None => {
            table
                .insert(SCHEMA_KEY, SCHEMA_VERSION)
                .map_err(|e| ctx.db(e))?;
            Ok(())
        }
    }
}

/// Whether [`initialise`] would change nothing: every table is there and the schema
/// version is this build's. A store opened for every reconcile then costs no write
/// (and no sync to disk) before the reconcile has anything to record.
pub(super) fn initialised(db: &impl ReadableDatabase) -> bool {
    let Ok(txn) = db.begin_read() else {
        return false;
    };
    let keyed_there = [OWNED, STATUSES]
        .into_iter()
        .all(|name| txn.open_table(keyed(name)).is_ok());
    let sequenced_there = [REVISIONS, EVENTS]
        .into_iter()
        .all(|name| txn.open_table(sequenced(name)).is_ok());
    let schema = txn
        .open_table(meta())
        .ok()
        .and_then(|table| table.get(SCHEMA_KEY).ok().flatten().map(|g| g.value()));
    keyed_there && sequenced_there && schema == Some(SCHEMA_VERSION)
}

/// Refuses a store written by a newer gitvisor. A store without the table is older than
/// schema versions, or fresh: both readable.
pub(super) fn check_schema(db: &impl ReadableDatabase, path: &Path) -> Result<(), StoreError> {
    let ctx = Ctx {
        path,
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
        Some(found) if found > SCHEMA_VERSION => Err(ctx.unsupported_schema(found)),
        _ => Ok(()),
    }
}

/// Write-ahead intents: see [`super::Store::record_intents`].
pub(super) fn write_intents(
    txn: &WriteTransaction,
    ctx: &Ctx<'_>,
    intents: &[Intent],
    revision: &str,
    now: u64,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(keyed(OWNED)).map_err(|e| ctx.db(e))?;
    for intent in intents {
        let key = intent.id.to_string();
        let existing: Option<OwnedRecord> = match table.get(key.as_str()).map_err(|e| ctx.db(e))? {
            Some(guard) => Some(ctx.decode(OWNED, &key, guard.value())?),
            None => None,
        };
        let record = match existing {
            Some(previous) => OwnedRecord {
                revision: revision.to_owned(),
                updated_unix: now,
                pending: true,
                // The object on the host may still be the previous one or already the
                // new one: keep the edges of both, so a delete waits for either's
                // dependents.
                depends_on: merged(previous.depends_on.clone(), intent.depends_on.clone()),
                ..previous
            },
            None => OwnedRecord {
                spec_hash: String::new(),
                revision: revision.to_owned(),
                updated_unix: now,
                pending: true,
                depends_on: intent.depends_on.clone(),
            },
        };
        put_keyed(&mut table, ctx, &key, &record)?;
    }
    Ok(())
}

/// The union of two recorded dependency lists; unknown only when both are.
fn merged(
    previous: Option<Vec<ResourceId>>,
    next: Option<Vec<ResourceId>>,
) -> Option<Vec<ResourceId>> {
    match (previous, next) {
        (Some(mut all), Some(next)) => {
            all.extend(next);
            all.sort();
            all.dedup();
            Some(all)
        }
        (known, None) | (None, known) => known,
    }
}

/// Encodes `record` and stores it under `key` in a `Kind/name`-keyed table.
fn put_keyed<T: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    ctx: &Ctx<'_>,
    key: &str,
    record: &T,
) -> Result<(), StoreError> {
    let bytes = ctx.encode(key, record)?;
    table.insert(key, bytes.as_slice()).map_err(|e| ctx.db(e))?;
    Ok(())
}

/// `Applied` upserts a confirmed owned record, `Forgotten` removes it.
pub(super) fn write_outcomes(
    txn: &WriteTransaction,
    ctx: &Ctx<'_>,
    outcomes: &[Outcome],
    now: u64,
) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(keyed(OWNED)).map_err(|e| ctx.db(e))?;
    for outcome in outcomes {
        let key = outcome.id().to_string();
        match outcome {
            Outcome::Applied {
                spec_hash,
                revision,
                depends_on,
                ..
            } => {
                let record = OwnedRecord {
                    spec_hash: spec_hash.clone(),
                    revision: revision.clone(),
                    updated_unix: now,
                    pending: false,
                    depends_on: Some(depends_on.clone()),
                };
                put_keyed(&mut table, ctx, &key, &record)?;
            }
            Outcome::Forgotten { .. } => {
                table.remove(key.as_str()).map_err(|e| ctx.db(e))?;
            }
        }
    }
    Ok(())
}

/// Sets (replaces) the status of each resource.
pub(super) fn write_statuses(
    txn: &WriteTransaction,
    ctx: &Ctx<'_>,
    statuses: &[(ResourceId, ResourceStatus)],
) -> Result<(), StoreError> {
    if statuses.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(keyed(STATUSES)).map_err(|e| ctx.db(e))?;
    for (id, status) in statuses {
        let key = id.to_string();
        put_keyed(&mut table, ctx, &key, status)?;
    }
    Ok(())
}

/// Removes the statuses of `ids`.
pub(super) fn delete_statuses(
    txn: &WriteTransaction,
    ctx: &Ctx<'_>,
    ids: &[ResourceId],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(keyed(STATUSES)).map_err(|e| ctx.db(e))?;
    for id in ids {
        table
            .remove(id.to_string().as_str())
            .map_err(|e| ctx.db(e))?;
    }
    Ok(())
}

/// Appends to the revision history, dropping the oldest beyond [`MAX_REVISIONS`].
pub(super) fn write_revision(
    txn: &WriteTransaction,
    ctx: &Ctx<'_>,
    rev: &RevisionRecord,
) -> Result<(), StoreError> {
    let mut table = txn
        .open_table(sequenced(REVISIONS))
        .map_err(|e| ctx.db(e))?;
    append(&mut table, ctx, std::slice::from_ref(rev))?;
    trim_oldest(&mut table, MAX_REVISIONS).map_err(|e| ctx.db(e))
}

/// Appends to the event log, dropping the oldest beyond [`MAX_EVENTS`].
pub(super) fn write_events(
    txn: &WriteTransaction,
    ctx: &Ctx<'_>,
    events: &[Event],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(sequenced(EVENTS)).map_err(|e| ctx.db(e))?;
    append(&mut table, ctx, events)?;
    trim_oldest(&mut table, MAX_EVENTS).map_err(|e| ctx.db(e))
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
pub(super) fn read_keyed<T: DeserializeOwned>(
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
pub(super) fn read_newest<T: DeserializeOwned>(
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
