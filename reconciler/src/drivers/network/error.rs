//! Errors of the network module: the seam's (what the host answered) and the driver's
//! (which bridge, which operation, what to do). Each is classified for the controller.

use std::path::PathBuf;

use super::nft::ListingError;
use crate::contract::{Classify, FailureClass, Interrupted};

/// What the host answered to an observation or a request.
#[derive(Debug, thiserror::Error)]
pub enum SeamError {
    /// A tool is not installed.
    #[error("`{tool}` is not installed (Debian package {package})")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    /// A tool could not be started.
    #[error("cannot run `{tool}`")]
    Spawn {
        tool: &'static str,
        #[source]
        cause: std::io::Error,
    },

    /// A tool ran and failed; `output` is what it printed.
    #[error("`{command}` failed ({status}): {output}")]
    Tool {
        command: String,
        status: String,
        output: String,
    },

    /// A tool ran past its deadline and was killed.
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    Timeout { command: String, seconds: u64 },

    /// A file under /proc or the run dir could not be read or written.
    #[error("{operation} {}", path.display())]
    File {
        operation: &'static str,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },

    #[error(transparent)]
    Listing(#[from] ListingError),

    /// A dnsmasq did not exit after SIGTERM and SIGKILL.
    #[error("dnsmasq pid {pid} is still running after SIGKILL")]
    Unkillable { pid: u32 },

    /// The fake was told to fail this request.
    #[error("injected failure")]
    Injected,
}

impl Classify for SeamError {
    fn class(&self) -> FailureClass {
        match self {
            SeamError::ToolMissing { .. } | SeamError::Listing(_) => FailureClass::NeedsUser,
            SeamError::Spawn { cause, .. } | SeamError::File { cause, .. } => match cause.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::ReadOnlyFilesystem => FailureClass::NeedsUser,
                _ => FailureClass::Transient,
            },
            // nft says "No such file or directory" for a rule or chain that went away
            // between plan and apply: the next plan sees the table as it is now.
            SeamError::Tool { output, .. } if output.contains("No such file or directory") => {
                FailureClass::Transient
            }
            SeamError::Tool { .. } => FailureClass::NeedsUser,
            SeamError::Timeout { .. } | SeamError::Unkillable { .. } | SeamError::Injected => {
                FailureClass::Transient
            }
        }
    }
}

/// A failure of the network part of a managed bridge's plan or apply.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The one batch read of the network state failed.
    #[error("reading gitvisor's nftables table, forwarding switches and dnsmasq instances")]
    Observe {
        #[source]
        cause: SeamError,
    },

    /// Bridges need rules and `nft` cannot run here.
    #[error(
        "bridge {bridge}: {mode} mode needs nftables, and {why}; install nftables (Debian package nftables)"
    )]
    NftUnavailable {
        bridge: String,
        mode: &'static str,
        why: String,
    },

    /// A request to the host failed.
    #[error("bridge {bridge}: {operation}")]
    Request {
        bridge: String,
        operation: String,
        #[source]
        cause: SeamError,
    },

    /// Cancelled or out of time before `operation`; the next plan carries on.
    #[error("bridge {bridge}: stopped before {operation}")]
    Interrupted {
        bridge: String,
        operation: String,
        #[source]
        cause: Interrupted,
    },

    /// The change handed to apply is not one this driver planned.
    #[error("bridge {bridge}: cannot apply this change: {reason}; this is a bug in gitvisor")]
    InvalidChange { bridge: String, reason: String },
}

impl Classify for NetworkError {
    fn class(&self) -> FailureClass {
        match self {
            NetworkError::Observe { cause } | NetworkError::Request { cause, .. } => cause.class(),
            NetworkError::NftUnavailable { .. } => FailureClass::NeedsUser,
            NetworkError::Interrupted { cause, .. } => cause.class(),
            NetworkError::InvalidChange { .. } => FailureClass::Bug,
        }
    }
}
