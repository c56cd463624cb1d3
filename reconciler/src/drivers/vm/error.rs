//! Errors of the VM driver, each naming the VM and what was being done; the host's
//! answer is the `#[source]`, so the chain reads `vm web: launch qemu-system-x86_64:
//! qemu-system-x86_64 exited with status 1: could not open disk image /x: No such file`.
//! Every variant is classified ([`Classify`]) for the controller's error policy.

use super::seam::HostError;
use super::seed::SeedError;
use crate::contract::{Classify, FailureClass, Interrupted};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The host seam could not be opened (netlink socket).
    #[error("cannot reach the host for the VirtualMachine driver")]
    Connect {
        #[source]
        cause: HostError,
    },

    /// The one batch read of run dirs, processes and links failed.
    #[error("reading the VMs' run dirs, processes and taps")]
    Observe {
        #[source]
        cause: HostError,
    },

    /// The host refused or failed a request.
    #[error("vm {vm}: {operation}")]
    Request {
        vm: String,
        operation: String,
        #[source]
        cause: HostError,
    },

    /// The VM cannot be launched on this host as declared.
    #[error("vm {vm} cannot run on this host: {problems}")]
    CannotLaunch { vm: String, problems: String },

    /// A restart's new configuration did not start; the previous one was launched again
    /// (`restored` says whether that worked).
    #[error("vm {vm}: the new configuration did not start; {restored}")]
    RestartFailed {
        vm: String,
        restored: String,
        #[source]
        cause: Box<VmError>,
    },

    /// A link that is not this VM's tap holds the name its tap needs.
    #[error(
        "vm {vm}: interface {tap} (for spec.networks[{nic}]) exists but is not this VM's tap (its alias is {alias:?}); delete or rename it"
    )]
    TapNameTaken {
        vm: String,
        tap: String,
        nic: usize,
        alias: Option<String>,
    },

    /// The Bridge a NIC names does not exist on the host.
    #[error(
        "vm {vm}: bridge {bridge} (spec.networks[{nic}]) does not exist; apply its Bridge first"
    )]
    BridgeMissing {
        vm: String,
        bridge: String,
        nic: usize,
    },

    /// The VM's process outlived the powerdown, quit and SIGKILL.
    #[error("vm {vm}: process {pid} did not end after ACPI powerdown, quit and SIGKILL")]
    StillRunning { vm: String, pid: u32 },

    #[error("vm {vm}: cloud-init seed")]
    Seed {
        vm: String,
        #[source]
        cause: SeedError,
    },

    /// The record could not be serialised (a bug: the spec came from a valid manifest).
    #[error("vm {vm}: writing its run record")]
    Record {
        vm: String,
        #[source]
        cause: serde_json::Error,
    },

    /// The step was cancelled or ran out of time before `operation`; what was done stays,
    /// and the next plan carries on from it.
    #[error("vm {vm}: stopped before {operation}")]
    Interrupted {
        vm: String,
        operation: String,
        #[source]
        cause: Interrupted,
    },

    /// The change handed to apply is not one this driver planned.
    #[error("vm {vm}: cannot apply this change: {reason}; this is a bug in gitvisor")]
    InvalidChange { vm: String, reason: String },
}

impl Classify for VmError {
    fn class(&self) -> FailureClass {
        match self {
            VmError::Connect { cause }
            | VmError::Observe { cause }
            | VmError::Request { cause, .. } => cause.class,
            VmError::CannotLaunch { .. }
            | VmError::TapNameTaken { .. }
            | VmError::BridgeMissing { .. } => FailureClass::NeedsUser,
            VmError::StillRunning { .. } => FailureClass::Transient,
            VmError::Interrupted { cause, .. } => cause.class(),
            VmError::RestartFailed { cause, .. } => cause.class(),
            VmError::Seed { .. } | VmError::Record { .. } | VmError::InvalidChange { .. } => {
                FailureClass::Bug
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_classified_and_the_cause_is_the_source() {
        let refused = VmError::Request {
            vm: "web".into(),
            operation: "launch qemu-system-x86_64".into(),
            cause: HostError::new(
                "exited with status 1: no such file",
                FailureClass::NeedsUser,
            ),
        };
        assert_eq!(refused.class(), FailureClass::NeedsUser);
        assert_eq!(refused.to_string(), "vm web: launch qemu-system-x86_64");
        assert_eq!(
            crate::contract::chain(&refused),
            "vm web: launch qemu-system-x86_64: exited with status 1: no such file"
        );
        let busy = VmError::Request {
            vm: "web".into(),
            operation: "pause".into(),
            cause: HostError::new("QMP stop: no answer", FailureClass::Transient),
        };
        assert_eq!(busy.class(), FailureClass::Transient);
        for needs_user in [
            VmError::CannotLaunch {
                vm: "web".into(),
                problems: "no kvm".into(),
            },
            VmError::BridgeMissing {
                vm: "web".into(),
                bridge: "br0".into(),
                nic: 0,
            },
            VmError::TapNameTaken {
                vm: "web".into(),
                tap: "vm_0_0".into(),
                nic: 0,
                alias: None,
            },
        ] {
            assert_eq!(needs_user.class(), FailureClass::NeedsUser, "{needs_user}");
        }
        let hung = VmError::StillRunning {
            vm: "web".into(),
            pid: 7,
        };
        assert_eq!(hung.class(), FailureClass::Transient);
        let stopped = VmError::Interrupted {
            vm: "web".into(),
            operation: "launch".into(),
            cause: Interrupted::Cancelled,
        };
        assert_eq!(stopped.class(), FailureClass::Transient);
        let bug = VmError::InvalidChange {
            vm: "web".into(),
            reason: "no snapshot".into(),
        };
        assert_eq!(bug.class(), FailureClass::Bug);
    }
}
