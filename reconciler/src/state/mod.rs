//! The embedded state store (DESIGN.md §3): what the system itself cannot tell us.
//!
//! Actual state is always read from the system; the store keeps only ownership (which
//! objects gitvisor created, and the spec hash it last applied to each), the last status of
//! each resource, a bounded history of applied revisions and a bounded event log.
//!
//! # Why redb
//!
//! The store is one file, `<state_dir>/state.redb` (`/var/lib/gitvisor` by default), with no
//! server to install or run. [redb](https://docs.rs/redb) is an embedded key-value store in
//! pure Rust (no C library to build or link), with ACID transactions whose commits are
//! crash-safe: it writes copy-on-write B-trees and switches to them with a checksummed
//! commit, so a crash or power loss leaves either the old or the new state, never a mix.
//! It is well maintained, and its file lock keeps a second writer out.
//!
//! # Layout
//!
//! Records are JSON (serde, camelCase: the shapes `gitvisor status --output json` prints)
//! in redb tables:
//!
//! | table       | key                  | value                 |
//! |-------------|----------------------|-----------------------|
//! | `owned`     | `Kind/name`          | [`OwnedRecord`]       |
//! | `statuses`  | `Kind/name`          | [`ResourceStatus`]    |
//! | `revisions` | sequence number, u64 | [`RevisionRecord`]    |
//! | `events`    | sequence number, u64 | [`Event`]             |
//! | `meta`      | `schemaVersion`      | u64                   |
//!
//! Every write method is one redb transaction: a batch is recorded whole or not at all.
//! The history and event log are trimmed to [`MAX_REVISIONS`] and [`MAX_EVENTS`] in the
//! transaction that appends to them.
//!
//! # Order of steps during a reconcile
//!
//! 1. [`Store::open`] takes the writer lock; a second gitvisor on the same state dir gets
//!    [`StoreError::Locked`].
//! 2. Before creating objects, [`Store::record_intents`] writes them as pending owned
//!    records (write-ahead), so that if the process dies between the create and the
//!    ownership marker on the object, the next run still knows the object is ours.
//! 3. After acting, [`Store::record_outcomes`] confirms what was applied (`Applied`, clears
//!    `pending`, stores the spec hash) and drops what was deleted or released (`Forgotten`).
//! 4. [`Store::set_statuses`] / [`Store::remove_statuses`], [`Store::append_events`], and
//!    finally [`Store::record_revision`].
//!
//! # Losing the store is safe
//!
//! Drivers delete or change only objects the store records as owned (and that carry
//! gitvisor's marker). A corrupt file is therefore moved aside to
//! `state.redb.corrupt-<unix-seconds>` with a warning and a fresh, empty store is created:
//! the worst outcome is that gitvisor reports its own objects as conflicts, never that it
//! deletes something.
//!
//! # Readers
//!
//! `status` and `plan` must not write, so they use [`ReadOnlyStore`]: an empty view when the
//! file does not exist (nothing is created) or is corrupt (what the next apply starts from),
//! and otherwise a read-only handle that may be opened while a [`Store`] is held by another
//! process.

mod error;
mod records;
mod store;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use records::{
    Event, EventLevel, Outcome, OwnedRecord, ResourceState, ResourceStatus, RevisionRecord,
    now_unix,
};
pub use store::{MAX_EVENTS, MAX_REVISIONS, ReadOnlyStore, SCHEMA_VERSION, STATE_FILE, Store};
