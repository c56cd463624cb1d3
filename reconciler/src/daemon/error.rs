//! Errors that stop the controller before or while it starts; once it runs, failures are
//! reported (status, events, metrics) and retried instead.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot install the SIGTERM/SIGINT/SIGHUP handlers")]
    Signals(#[source] std::io::Error),

    #[error("cannot serve the local API on {path}")]
    Api {
        path: PathBuf,
        #[source]
        source: crate::daemon::api::ApiError,
    },

    #[error(
        "cannot serve metrics on {address} (is the port in use? give another with --metrics-listen)"
    )]
    Metrics {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("the source cannot be used")]
    Source(#[from] SourceError),
}
