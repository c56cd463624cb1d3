//! Errors of the container driver, each naming the container and what was being done;
//! the host's answer is the `#[source]`, so a chain reads `container web: create the
//! container: runc create … failed (exit status 1): …`.

use super::seam::HostError;
use crate::contract::{Classify, FailureClass, Interrupted};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The one batch read of the runtime's containers failed.
    #[error("listing the containers under gitvisor's runtime root")]
    Observe {
        #[source]
        cause: HostError,
    },

    /// A request to the host failed.
    #[error("container {container}: {operation}")]
    Request {
        container: String,
        operation: String,
        #[source]
        cause: HostError,
    },

    /// The declaration cannot make a container (no command, a mount that cannot work).
    #[error("container {container}: {why}")]
    Declaration { container: String, why: String },

    /// The step was cancelled or ran out of time before `operation`.
    #[error("container {container}: stopped before {operation}")]
    Interrupted {
        container: String,
        operation: String,
        #[source]
        cause: Interrupted,
    },

    /// The change handed to apply is not one this driver planned.
    #[error("container {container}: cannot apply this change: {reason}; this is a bug in gitvisor")]
    InvalidChange { container: String, reason: String },
}

impl Classify for ContainerError {
    fn class(&self) -> FailureClass {
        match self {
            ContainerError::Observe { cause } | ContainerError::Request { cause, .. } => {
                cause.class()
            }
            ContainerError::Declaration { .. } => FailureClass::NeedsUser,
            ContainerError::Interrupted { cause, .. } => cause.class(),
            ContainerError::InvalidChange { .. } => FailureClass::Bug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_classified_and_names_the_container() {
        let missing_runc = ContainerError::Request {
            container: "web".into(),
            operation: "create the container".into(),
            cause: HostError::Spawn {
                program: "runc".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
        };
        assert_eq!(missing_runc.class(), FailureClass::NeedsUser);
        assert_eq!(
            crate::contract::chain(&missing_runc),
            format!(
                "container web: create the container: cannot run runc; install it (Debian: apt install runc): {}",
                std::io::Error::from(std::io::ErrorKind::NotFound)
            )
        );
        let failed = ContainerError::Request {
            container: "web".into(),
            operation: "start".into(),
            cause: HostError::Command {
                program: "runc".into(),
                args: "start web".into(),
                status: "exit status: 1".into(),
                stderr: "boom".into(),
            },
        };
        assert_eq!(failed.class(), FailureClass::Transient);
        let refused = ContainerError::Request {
            container: "web".into(),
            operation: "create".into(),
            cause: HostError::Command {
                program: "runc".into(),
                args: "create web".into(),
                status: "failed".into(),
                stderr: "exec: \"nope\": executable file not found in $PATH".into(),
            },
        };
        assert_eq!(refused.class(), FailureClass::NeedsUser);
        let declaration = ContainerError::Declaration {
            container: "web".into(),
            why: "no command".into(),
        };
        assert_eq!(declaration.class(), FailureClass::NeedsUser);
        let bug = ContainerError::InvalidChange {
            container: "web".into(),
            reason: "no snapshot".into(),
        };
        assert_eq!(bug.class(), FailureClass::Bug);
        let stopped = ContainerError::Interrupted {
            container: "web".into(),
            operation: "start".into(),
            cause: Interrupted::Cancelled,
        };
        assert_eq!(stopped.class(), FailureClass::Transient);
    }
}
