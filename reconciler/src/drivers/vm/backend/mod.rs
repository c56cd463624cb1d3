//! Backends: what differs between hypervisors, behind one trait, so the manifest,
//! planning, taps, run dirs and lifecycle are shared: QEMU (`qemu.rs`) and gitvisor's own
//! microVM monitor, `gitvisor-vmm` (`builtin.rs`).
//!
//! A backend is pure: it turns a resolved [`Launch`] into the command line that starts
//! the VM detached, and says which declared features it cannot provide. Talking to a
//! running VM (status, powerdown, pause) is the host seam's business, through the
//! [`Monitor`](super::monitor::Monitor) of the VM's hypervisor, so tests of planning and
//! lifecycle run against a fake host with the real backends.
//!
//! What every backend must honour, so the shared lifecycle works:
//! - the process detaches once the guest is set up (exit status 0 of the started
//!   program means "running"), and writes its pid to `paths.pid()`;
//! - its command line (as `/proc/PID/cmdline` shows it) contains the run dir's pid file
//!   path, which is how observe tells the VM's process from any other;
//! - it serves its control socket at `paths.monitor(hypervisor)`, for the host seam's
//!   [`Monitor`](super::monitor::Monitor) of that hypervisor;
//! - the serial console goes to `serial_log` and, when asked, `paths.serial_socket()`;
//! - a guest-initiated poweroff ends the process.

pub mod builtin;
pub mod qemu;

use std::sync::Arc;

use super::launch::Launch;
use crate::drivers::vm::{Hypervisor, VirtualMachineSpec};

pub use builtin::BuiltinBackend;
pub use qemu::QemuBackend;

pub trait Backend: Send + Sync + std::fmt::Debug {
    fn hypervisor(&self) -> Hypervisor;

    /// The program and its arguments that start `launch` detached.
    fn command_line(&self, launch: &Launch) -> Vec<String>;

    /// What of `spec` this backend cannot provide, one sentence each; a VM asking for
    /// any of it is not planned.
    fn unsupported(&self, spec: &VirtualMachineSpec) -> Vec<String>;

    /// Why `launch` cannot start on this host with this backend (its program missing,
    /// no KVM for a backend that needs it), one sentence each naming the fix; the plan
    /// shows them and apply refuses.
    fn problems(&self, _launch: &Launch) -> Vec<String> {
        Vec::new()
    }
}

/// The backends of this build, one per hypervisor.
#[derive(Debug, Clone)]
pub struct Backends(Vec<Arc<dyn Backend>>);

impl Backends {
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Self {
        Backends(backends)
    }

    /// Every backend this build has, the builtin VMM's binary located on this host.
    pub fn built_in() -> Self {
        Backends::new(vec![
            Arc::new(QemuBackend::default()),
            Arc::new(BuiltinBackend::locate()),
        ])
    }

    /// The hypervisors these backends run, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|b| b.hypervisor().as_str()).collect()
    }

    pub fn get(&self, hypervisor: Hypervisor) -> Option<&dyn Backend> {
        self.0
            .iter()
            .find(|b| b.hypervisor() == hypervisor)
            .map(|b| b.as_ref())
    }
}
