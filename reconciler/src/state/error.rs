//! Errors of the state store. Each names the store file and what was being done; the
//! underlying cause is the error's `source()`, not repeated in its message. redb's errors
//! are boxed to keep `Result<_, StoreError>` small.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb's file lock is held: another gitvisor process is writing the store right now.
    #[error(
        "another gitvisor process is writing the state store {path} right now (a `gitvisor apply`, \
         or a reconcile of `gitvisor run`): only one may write a state dir at a time; wait for it \
         to finish and try again"
    )]
    Locked { path: PathBuf },

    /// A controller (`gitvisor run`) holds the state dir's claim ([`super::ControllerClaim`]).
    #[error(
        "a controller (`gitvisor run`{}) runs on the state dir {}: it applies its own source, \
         and an apply beside it would be undone at its next resync. Change what the controller \
         follows (commit or save the manifests there) and run `gitvisor sync` to apply it now, \
         or stop the controller (`systemctl stop gitvisor`) and run this again",
        pid.map(|pid| format!(", pid {pid}")).unwrap_or_default(),
        state_dir.display()
    )]
    ControllerRunning {
        state_dir: PathBuf,
        pid: Option<u32>,
    },

    #[error("cannot {operation} the controller's claim {path}")]
    ControllerClaim {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot list state directory {path}")]
    ListDir {
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

    /// redb panicked on the file's bytes (caught by `contain`): the file was damaged
    /// after it was opened, or in a way its integrity check does not see.
    #[error(
        "state store {path} is damaged: {operation} failed inside redb ({detail}); \
         move the file aside to start with an empty store (gitvisor then prunes nothing and \
         shows its objects as conflicts until adopted)"
    )]
    Damaged {
        path: PathBuf,
        operation: &'static str,
        detail: String,
    },

    #[error("cannot read state store {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A read-only copy never saw the file stand still (a writer committing throughout).
    #[error(
        "state store {path} changed during each of {attempts} attempts to copy it; \
         retry when the running `gitvisor apply` has finished"
    )]
    Unstable { path: PathBuf, attempts: u32 },

    #[error(
        "state store {path} is {size} bytes, more than the {limit} bytes a read-only command \
         copies into memory; move it aside if it is not gitvisor's"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error("cannot make {path} private (mode {mode:o})")]
    Permissions {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },

    /// A store call moved to a blocking thread did not come back (the runtime is shutting
    /// down).
    #[error("state store {path}: {operation} was cancelled")]
    Blocking {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}
