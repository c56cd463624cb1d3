//! The control channel of a running VM, as the lifecycle needs it: its status, and the
//! few commands that change it. QEMU's is QMP (`qmp.rs`); the builtin VMM's is its JSON
//! lines API (`vmm_api.rs`). The host seam picks the monitor by the hypervisor the VM's
//! record names.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;

use crate::drivers::vm::Hypervisor;

/// A command to a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Press the ACPI power button; the guest decides whether and when to power off.
    Powerdown,
    /// Stop the vCPUs (and the guest's clock).
    Pause,
    /// Let stopped vCPUs run again.
    Resume,
    /// End the hypervisor process at once, as pulling the plug does.
    Quit,
}

impl Control {
    /// What the command is called on `hypervisor`: the builtin VMM's graceful shutdown is
    /// its ACPI power button (a GED) and its hard stop is `stop`.
    pub fn name_for(self, hypervisor: Hypervisor) -> &'static str {
        match (self, hypervisor) {
            (Control::Powerdown, Hypervisor::Qemu) => "ACPI powerdown",
            (Control::Powerdown, Hypervisor::Builtin) => "ACPI power button",
            (Control::Pause, _) => "pause",
            (Control::Resume, _) => "resume",
            (Control::Quit, Hypervisor::Qemu) => "quit",
            (Control::Quit, Hypervisor::Builtin) => "stop",
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name_for(Hypervisor::Qemu))
    }
}

/// What the monitor says the guest is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStatus {
    Running,
    Paused,
    /// Anything else the monitor reports (`shutdown`, `internal-error`, `inmigrate`, …),
    /// as it names it.
    Other(String),
}

impl fmt::Display for GuestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestStatus::Running => f.write_str("running"),
            GuestStatus::Paused => f.write_str("paused"),
            GuestStatus::Other(status) => f.write_str(status),
        }
    }
}

/// A failed conversation with a monitor: the socket, the protocol, or the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MonitorError {
    pub message: String,
    /// The monitor did not answer in time or the connection broke (retry may help),
    /// rather than refusing the command.
    pub transient: bool,
}

#[async_trait]
pub trait Monitor: Send + Sync + fmt::Debug {
    async fn status(&self, socket: &Path) -> Result<GuestStatus, MonitorError>;
    async fn control(&self, socket: &Path, command: Control) -> Result<(), MonitorError>;
}
