//! The controller's local API: HTTP/1.1 on the unix socket `<run-dir>/controller.sock`,
//! for root only, and the opt-in metrics endpoint on TCP.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/status` | the controller's status snapshot ([`crate::daemon::ControllerStatus`]) and the DHCP leases (`dhcpLeases`) |
//! | `GET /v1/revision` | the revision applied, the one rejected, the source |
//! | `GET /v1/events[?limit=N][&follow=1]` | recent events, one JSON object per line; with `follow`, then every new one as it happens |
//! | `POST /v1/sync[?wait=0]` | reconcile now (fetch, forget holds, apply); answers with the outcome once done, or at once with `wait=0` |
//! | `GET /metrics` | Prometheus text (also on `--metrics-listen`) |
//!
//! Who may ask: the socket is created mode 0600 (owner root), and every connection's
//! peer credentials (`SO_PEERCRED`) are checked as well: a client whose uid is not 0 is
//! answered 403 and disconnected, even if the socket's mode was loosened by hand.
//! `curl --unix-socket /run/gitvisor/controller.sock http://localhost/v1/status` works.
//!
//! Each listener serves a bounded number of connections at once from a pool of its own
//! (`admission`), and every request head must arrive in time, so a flood on the metrics
//! port cannot take the descriptors the controller and its API socket need.

mod admission;
pub mod client;
pub mod http;
mod metrics;
mod routes;
mod server;

use std::path::{Path, PathBuf};

pub use client::{ApiClient, ClientError, StreamEnd};
pub use metrics::serve_metrics;
pub use server::{ApiServer, serve};

/// The socket's file name in the run dir.
pub const SOCKET_NAME: &str = "controller.sock";

/// Where the API socket of a controller using `run_dir` is.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "another controller already answers on {path} (one `gitvisor run` per run dir; stop it first)"
    )]
    AlreadyRunning { path: PathBuf },

    #[error(
        "{path} exists and is not a socket; gitvisor does not remove what it did not create (move it away)"
    )]
    NotASocket { path: PathBuf },

    #[error("cannot {operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
