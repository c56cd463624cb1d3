//! Errors of the state store. Each names the store file and what was being done; the
//! underlying cause is the error's `source()`, not repeated in its message. redb's errors
//! are boxed to keep `Result<_, StoreError>` small.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb's file lock is held: another gitvisor process has the store open for writing.
    #[error(
        "another gitvisor process holds the state store {path} (only one may reconcile a state dir at a time; \
         is `gitvisor apply` or `gitvisor run` already running?)"
    )]
    Locked { path: PathBuf },

    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot open state store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },

    #[error("state store {path} is corrupt and cannot be moved aside to {to}")]
    MoveAside {
        path: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "state store {path} has schema version {found}, newer than this gitvisor supports ({supported}); \
         upgrade gitvisor, or move the file aside to start with an empty store"
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },

    /// A redb transaction, table or storage error.
    #[error("state store {path}: {operation} failed")]
    Database {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: Box<redb::Error>,
    },

    #[error("state store {path}: {operation}: cannot encode the record for {key}")]
    Encode {
        path: PathBuf,
        operation: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("state store {path}: {operation}: cannot decode record {key:?} of table {table}")]
    Decode {
        path: PathBuf,
        operation: &'static str,
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("state store {path}: {operation}: invalid key {key:?} in table {table}: {reason}")]
    InvalidKey {
        path: PathBuf,
        operation: &'static str,
        table: &'static str,
        key: String,
        reason: String,
    },
}
