//! Errors of the bridge driver, each naming the bridge and what was being done.

use super::seam::NetlinkError;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The netlink socket could not be opened.
    #[error("cannot reach the kernel's link configuration: {cause}")]
    Connect { cause: NetlinkError },

    /// The one batch read of links and addresses failed.
    #[error("reading links and addresses from the kernel: {cause}")]
    Observe { cause: NetlinkError },

    /// The kernel refused a request.
    #[error("bridge {bridge}: {operation}: {cause}")]
    Request {
        bridge: String,
        operation: String,
        cause: NetlinkError,
    },

    /// A declared port does not exist on this host.
    #[error("bridge {bridge}: port {port} does not exist on this host")]
    PortNotFound { bridge: String, port: String },

    /// A declared port belongs to a master gitvisor does not manage.
    #[error(
        "bridge {bridge}: port {port} is enslaved to {master}, which gitvisor does not manage; release it there first"
    )]
    PortInUse {
        bridge: String,
        port: String,
        master: String,
    },

    /// The change handed to apply is not one this driver planned.
    #[error("bridge {bridge}: cannot apply this change: {reason}")]
    InvalidChange { bridge: String, reason: String },
}
