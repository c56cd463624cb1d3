//! The NfsMount driver's errors: each names the share, what was being done, and the fix.

use super::seam::{Holder, NfsHostError};
use crate::contract::{Classify, FailureClass, Interrupted};

#[derive(Debug, thiserror::Error)]
pub enum NfsMountError {
    #[error("NfsMount: cannot read the mount table and gitvisor's mount records")]
    Observe {
        #[source]
        cause: NfsHostError,
    },
    #[error(
        "NfsMount {name}: this host cannot mount NFS shares ({why}); install nfs-common (Debian: apt install nfs-common), see gitvisor doctor"
    )]
    NoClient { name: String, why: String },
    #[error(
        "NfsMount {name}: cannot mount {source_path} at {path}{unreachable}; check that the server is up and exports it to this host, then apply again"
    )]
    Mount {
        name: String,
        source_path: String,
        path: String,
        /// `` (the server answered) or `: the server is unreachable (…)`.
        unreachable: String,
        #[source]
        cause: NfsHostError,
    },
    #[error(
        "NfsMount {name}: {path} is in use, so it is not unmounted: {}; stop them (or let go of the share) and apply again",
        holders.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Held {
        name: String,
        path: String,
        holders: Vec<Holder>,
    },
    #[error("NfsMount {name}: cannot {operation}")]
    Request {
        name: String,
        operation: String,
        #[source]
        cause: NfsHostError,
    },
    #[error("NfsMount {name}: stopped")]
    Interrupted {
        name: String,
        #[source]
        cause: Interrupted,
    },
}

impl Classify for NfsMountError {
    fn class(&self) -> FailureClass {
        match self {
            NfsMountError::Observe { cause }
            | NfsMountError::Mount { cause, .. }
            | NfsMountError::Request { cause, .. } => cause.class(),
            NfsMountError::NoClient { .. } | NfsMountError::Held { .. } => FailureClass::NeedsUser,
            NfsMountError::Interrupted { .. } => FailureClass::Transient,
        }
    }
}
