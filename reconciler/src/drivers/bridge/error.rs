//! Errors of the bridge driver, each naming the bridge and what was being done; the
//! kernel's answer is the `#[source]`, so the chain reads `bridge br0: add address
//! 10.0.0.1/24: Invalid argument (os error 22)`. Every variant is classified
//! ([`Classify`]) for the controller's error policy.

use super::seam::NetlinkError;
use crate::contract::{Classify, FailureClass, Interrupted};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The netlink socket could not be opened.
    #[error(
        "cannot reach the kernel's link configuration (a netlink socket for the Bridge driver)"
    )]
    Connect {
        #[source]
        cause: NetlinkError,
    },

    /// The one batch read of links and addresses failed.
    #[error("reading links and addresses from the kernel")]
    Observe {
        #[source]
        cause: NetlinkError,
    },

    /// The kernel refused a request.
    #[error("bridge {bridge}: {operation}")]
    Request {
        bridge: String,
        operation: String,
        #[source]
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

    /// The step was cancelled or ran out of time before `operation`; what was sent so far
    /// stays, and the next plan carries on from it.
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

impl Classify for BridgeError {
    fn class(&self) -> FailureClass {
        match self {
            BridgeError::Connect { cause } | BridgeError::Observe { cause } => {
                match cause.class() {
                    // An errno the kernel will answer again (no permission, no netlink
                    // route family): the host needs fixing.
                    FailureClass::NeedsUser => FailureClass::NeedsUser,
                    _ => FailureClass::Transient,
                }
            }
            BridgeError::Request { cause, .. } => cause.class(),
            BridgeError::PortNotFound { .. } | BridgeError::PortInUse { .. } => {
                FailureClass::NeedsUser
            }
            BridgeError::Interrupted { cause, .. } => cause.class(),
            BridgeError::InvalidChange { .. } => FailureClass::Bug,
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;

    fn request(errno: Errno) -> BridgeError {
        BridgeError::Request {
            bridge: "br0".into(),
            operation: "add address 10.0.0.1/24".into(),
            cause: NetlinkError::from_errno(errno as i32),
        }
    }

    #[test]
    fn every_variant_is_classified_for_the_error_policy() {
        assert_eq!(request(Errno::EBUSY).class(), FailureClass::Transient);
        assert_eq!(request(Errno::ENODEV).class(), FailureClass::Transient);
        assert_eq!(request(Errno::EEXIST).class(), FailureClass::Transient);
        assert_eq!(request(Errno::EPERM).class(), FailureClass::NeedsUser);
        assert_eq!(request(Errno::EOPNOTSUPP).class(), FailureClass::NeedsUser);
        assert_eq!(request(Errno::ERANGE).class(), FailureClass::NeedsUser);
        let transport = BridgeError::Observe {
            cause: NetlinkError::other("socket closed"),
        };
        assert_eq!(transport.class(), FailureClass::Transient);
        let denied = BridgeError::Connect {
            cause: NetlinkError::from_errno(Errno::EACCES as i32),
        };
        assert_eq!(denied.class(), FailureClass::NeedsUser);
        let missing = BridgeError::PortNotFound {
            bridge: "br0".into(),
            port: "eth9".into(),
        };
        assert_eq!(missing.class(), FailureClass::NeedsUser);
        let in_use = BridgeError::PortInUse {
            bridge: "br0".into(),
            port: "eth1".into(),
            master: "bond0".into(),
        };
        assert_eq!(in_use.class(), FailureClass::NeedsUser);
        let stopped = BridgeError::Interrupted {
            bridge: "br0".into(),
            operation: "set up".into(),
            cause: Interrupted::Cancelled,
        };
        assert_eq!(stopped.class(), FailureClass::Transient);
        let bug = BridgeError::InvalidChange {
            bridge: "br0".into(),
            reason: "no snapshot".into(),
        };
        assert_eq!(bug.class(), FailureClass::Bug);
    }

    #[test]
    fn the_kernels_answer_is_the_source_not_part_of_the_message() {
        let error = request(Errno::EINVAL);
        assert_eq!(error.to_string(), "bridge br0: add address 10.0.0.1/24");
        assert_eq!(
            crate::contract::chain(&error),
            format!(
                "bridge br0: add address 10.0.0.1/24: {}",
                std::io::Error::from_raw_os_error(Errno::EINVAL as i32)
            )
        );
    }
}
