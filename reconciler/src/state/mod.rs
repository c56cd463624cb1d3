//! The embedded state store: what the system itself cannot tell us.
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
//! commit (`fsync`ed before the commit returns), so a crash or power loss leaves either
//! the old or the new state, never a mix. It is well maintained, and its file lock keeps a
//! second writer out.
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
//!    [`StoreError::Locked`]. The lock lasts as long as the write (one `apply`, one of a
//!    controller's reconciles); a running controller also holds a [`ControllerClaim`] on
//!    the state dir for its whole life, which `apply` checks first.
//! 2. Before creating objects, [`Store::record_intents`] writes them as pending owned
//!    records (write-ahead), so that if the process dies between the create and the
//!    ownership marker on the object, the next run still knows the object is ours.
//! 3. After acting, [`Store::record_apply`] records everything in ONE transaction: the
//!    outcomes (`Applied` confirms an owned record, clears `pending`, stores the spec hash;
//!    `Forgotten` drops what was deleted or released), the statuses set and removed, the
//!    revision and the events. An interrupted apply therefore leaves the store as it was
//!    after step 2, or complete, never half-recorded.
//!
//! redb does blocking file I/O; async code calls the store through
//! [`Store::open_async`], [`Store::run_blocking`] and their [`ReadOnlyStore`]
//! counterparts, which run it on tokio's blocking pool.
//!
//! # Interrupted writers: repair
//!
//! While a [`Store`] is open, redb marks the file as in use; a writer that is killed
//! (`kill -9`, SIGTERM without a handler, a power loss) or whose commit fails (a full disk)
//! leaves the file marked, needing repair: the last committed transaction is intact, but
//! redb must rebuild its allocator state before the file can be opened. This is not
//! corruption. [`Store::open`] repairs it in place (its integrity check rebuilds what is
//! needed and keeps every committed record) and never moves such a file aside.
//!
//! # Readers: a verified private copy
//!
//! `status` and `plan` must not write, yet redb's read-only open refuses a file that needs
//! repair and trusts the bytes of one it opens. So [`ReadOnlyStore::open`] never opens the
//! file with redb: it copies the file into memory at one instant (reading it twice until
//! both reads agree, so a writer committing meanwhile costs a retry, not a torn copy) and
//! opens the copy with the same integrity check and repair that [`Store::open`] runs on the
//! file. The view therefore shows exactly the records the next apply will start from,
//! after any interruption, and the file and the disk are never written.
//!
//! # Damage
//!
//! Bytes damaged outside redb (a disk error, a stray write) fail the integrity check; a
//! damaged file that panics redb instead is caught (see `contain`) and treated the same.
//! No store content can crash a command:
//!
//! - [`Store::open`] moves the damaged file aside to `state.redb.corrupt-<unix-seconds>`
//!   with a warning naming both files, and starts with a fresh, empty store.
//! - [`ReadOnlyStore::open`] shows an empty view, with a warning and
//!   [`ReadOnlyStore::damage`] saying why, and leaves the file alone; the next apply
//!   then moves it aside as above.
//! - A panic after a successful open (damage written while the file was open) is
//!   [`StoreError::Damaged`], which fails the command with the file named.
//!
//! Losing the store this way is safe: drivers delete or change only objects the store
//! records as owned (and that carry gitvisor's marker). The worst outcome is that gitvisor
//! reports its own objects as conflicts, never that it deletes something.
//!
//! # Privacy
//!
//! A writable store is deletion authority, so the state dir is 0700 and the store and
//! every copy moved aside 0600, whatever the umask; a writable open tightens what an
//! older gitvisor left too open (see `private`). Read-only copies live only in memory.

mod blocking;
mod closed;
mod contain;
mod controller_claim;
mod error;
mod private;
mod read_only;
mod records;
mod snapshot;
mod store;
mod tables;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_damage;
#[cfg(test)]
mod tests_interrupted;
#[cfg(test)]
mod tests_private;

pub use controller_claim::{CONTROLLER_LOCK_FILE, ControllerClaim};
pub use error::StoreError;
pub use private::{DIR_MODE, FILE_MODE};
pub use read_only::ReadOnlyStore;
pub use records::{
    ApplyRecord, Event, EventLevel, Intent, Outcome, OwnedRecord, ResourceState, ResourceStatus,
    RevisionRecord, now_unix,
};
pub use store::{STATE_FILE, Store};
pub use tables::{MAX_EVENTS, MAX_REVISIONS, SCHEMA_VERSION};
