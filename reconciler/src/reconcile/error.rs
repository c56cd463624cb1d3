//! Errors of a reconcile: each names what was being done and how to fix it; causes stay in
//! `source()`.

use crate::drivers::DriverError;
use crate::model::ResourceId;
use crate::state::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A host driver could not reach its facility.
    #[error("cannot connect this host's drivers (is this run as root, on Linux?)")]
    Connect(#[source] DriverError),

    #[error("the state store could not be read or written")]
    Store(#[from] StoreError),

    #[error("observing the host failed")]
    Observe(#[source] DriverError),

    /// `--target` named something that is neither declared for this host nor managed.
    #[error(
        "--target {id}: no such resource is declared for host {host} or managed by gitvisor \
         (check the kind and name; kinds are Bridge, NfsMount, Volume, Container, VirtualMachine)"
    )]
    UnknownTarget { id: ResourceId, host: String },
}
