//! The VirtualMachine driver: KVM guests, one hypervisor process per VM (`docs/vms.md`).
//!
//! # Why it looks like this
//!
//! Guests must outlive gitvisor: the CLI exits after `apply`, the controller restarts
//! and upgrades. So each VM is a detached hypervisor process (QEMU with `-daemonize`, or
//! gitvisor's own `gitvisor-vmm --daemonize` for `hypervisor: builtin`) whose every
//! runtime file lives in the VM's run dir, `<run dir>/vm/<name>/`: pid file, control
//! socket (QMP, or the VMM's `api.sock`), serial socket and log, cloud-init seed. What
//! must outlive a host reboot, the UEFI variable store, lives in its data dir,
//! `<state dir>/vm/<name>/` (`paths.rs`). Observe finds the guests again from those
//! directories alone: one pass over them (record, pid, `/proc/PID/cmdline` naming the pid
//! file), the monitor's status of each live process, one link dump for the taps, and the
//! DHCP leases of gitvisor's dnsmasq, joined with the NICs' MAC addresses for `status`.
//!
//! # Ownership
//!
//! The marker is the run dir with gitvisor's record in it (`gitvisor.json`: the VM's
//! name, the spec last applied, the command line launched), made under a temporary name
//! and renamed so a VM-named directory always has its record (`paths.rs`). Taps carry
//! the `ifalias` `gitvisor:vm/<name>/<nic>`, set before they get their final name and
//! before they join a bridge (`nic.rs`). With the state store's record, the shared rules
//! of [`crate::contract::ownership`] decide (`diff.rs`): only a VM with both is changed or
//! pruned; a run dir without gitvisor's record is never adopted.
//!
//! # Order of steps
//!
//! 1. **plan**: [`VmHost::observe`] once; per declared VM resolve the [`launch::Launch`]
//!    (disks' Volumes from the revision, KVM and OVMF from the host) and the backend's
//!    command line, compute the drift against the record and the process
//!    (`drift.rs`) and decide (`diff.rs`); add deletes for pruned VMs. Every change that
//!    touches the guest's hardware is an update that restarts it, and says so. A change
//!    that would launch a guest from files the host does not have (or not in the
//!    declared format) is refused, naming the manifest's file, line and field
//!    (`preflight.rs`): a restart never stops a guest it cannot start again.
//! 2. **apply** (`apply.rs`): create = run dir + record, taps, seed, NVRAM, launch;
//!    update = check the new launch, stop if needed, new record, taps, start or
//!    pause/resume (a restart whose new launch fails brings the previous configuration
//!    back); delete = stop, taps, run dir, data dir. Stop is ACPI powerdown (the builtin VMM's power button), then quit
//!    (`stop`) and SIGKILL after the timeout.
//!
//! # Seam and backends
//!
//! The host is reached only through [`VmHost`] ([`host::RealHost`]; `FakeHost` in tests).
//! What differs between hypervisors is a [`backend::Backend`] (the command line and what
//! it cannot do; pure) and a [`monitor::Monitor`] (status and control of a running VM;
//! QMP for QEMU, `vmm_api.rs` for the builtin VMM), so both share the manifests,
//! planning and lifecycle.
//! Taps are created by the `gitvisor-tap` crate (an ioctl, the one thing here that needs
//! `unsafe`, kept out of this crate) and configured over netlink.

mod apply;
pub mod backend;
pub mod console;
mod diff;
mod drift;
mod error;
#[cfg(test)]
mod fake;
pub mod host;
pub mod kernel_cache;
mod kind;
pub mod launch;
pub mod monitor;
pub mod nic;
mod observed;
pub mod paths;
pub mod preflight;
pub mod probe;
pub mod qmp;
pub mod record;
pub mod seam;
pub mod seed;
mod spec;
#[cfg(test)]
mod tests;
pub(crate) mod validate;
#[cfg(test)]
mod vlan_tests;
pub mod vmm_api;
mod watch;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::contract::{
    Change, ContractViolation, Driver, DriverError, PlanContext, StepContext, WatchSink, Watching,
};
use crate::model::{Kind, Resource};

pub use backend::{Backend, Backends, BuiltinBackend, QemuBackend};
pub use diff::VmSnapshot;
pub use error::VmError;
pub use host::RealHost;
pub use kind::REGISTRATION;
pub use paths::VmRoots;
pub use seam::{HostSnapshot, VmHost, VmRequest};
pub use spec::{
    Accel, BUILTIN_BASE_CMDLINE, BUILTIN_MAX_CMDLINE, BUILTIN_MAX_CPUS, BUILTIN_MAX_DEVICES,
    BUILTIN_MAX_MEMORY, Boot, CloudInit, Console, Disk, DiskFormat, Firmware, Graphics, Hypervisor,
    MAX_VM_DEVICES, MAX_VM_MEMORY, Nic, VirtualMachineSpec, VmState,
};

/// How long a guest may take to power off after the ACPI button before it is stopped
/// hard, unless `shutdownTimeout` says otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one apply may take besides the guest's shutdown: launching, the hard stop's
/// waits, a few requests.
const STEP_OVERHEAD: Duration = Duration::from_secs(180);

/// Plans and applies `kind: VirtualMachine` resources through a [`VmHost`].
#[derive(Clone)]
pub struct VmDriver {
    host: Arc<dyn VmHost>,
    /// Where the run dirs and data dirs are, as command lines name them.
    roots: VmRoots,
    backends: Backends,
}

impl std::fmt::Debug for VmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmDriver")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl VmDriver {
    /// A driver over any host (a fake in tests), with its directories below `roots`.
    pub fn new(host: Arc<dyn VmHost>, roots: VmRoots, backends: Backends) -> Self {
        VmDriver {
            host,
            roots,
            backends,
        }
    }

    /// The driver on this host, with run dirs below `<run_dir>/vm` and data dirs below
    /// `<state_dir>/vm`. Call inside a Tokio runtime (the netlink socket is driven by it).
    pub fn connect(
        run_dir: &std::path::Path,
        state_dir: &std::path::Path,
    ) -> Result<Self, VmError> {
        let roots = VmRoots::new(run_dir, state_dir);
        let network_dir = crate::drivers::network::network_dir(run_dir);
        let host = RealHost::connect(roots.clone(), network_dir)
            .map_err(|cause| VmError::Connect { cause })?;
        Ok(VmDriver::new(Arc::new(host), roots, Backends::built_in()))
    }

    /// [`VmDriver::connect`] as the registry's constructor.
    pub(crate) fn connect_driver(
        settings: &crate::drivers::HostSettings,
    ) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(VmDriver::connect(
            &settings.run_dir,
            &settings.state_dir,
        )?))
    }
}

#[async_trait]
impl Driver for VmDriver {
    fn kind(&self) -> Kind {
        Kind::VirtualMachine
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let snapshot = self
            .host
            .observe()
            .await
            .map_err(|cause| VmError::Observe { cause })?;
        let stale_kernel_caches = kernel_cache::stale(
            &snapshot.kernel_caches,
            desired
                .iter()
                .chain(context.declared_of(Kind::VirtualMachine)),
        );
        let host = observed::HostVms::new(snapshot);
        let now = SystemTime::now();
        let wanted: BTreeSet<std::path::PathBuf> = desired
            .iter()
            .filter_map(|resource| resource.spec.get::<VirtualMachineSpec>())
            .flat_map(preflight::paths)
            .collect();
        let files = if wanted.is_empty() {
            preflight::FileFacts::new()
        } else {
            self.host
                .inspect(wanted.into_iter().collect())
                .await
                .map_err(|cause| VmError::Observe { cause })?
        };
        let mut changes = Vec::with_capacity(desired.len());
        let mut declared = BTreeSet::new();
        for resource in desired {
            let Some(spec) = resource.spec.get::<VirtualMachineSpec>() else {
                return Err(ContractViolation {
                    id: resource.id(),
                    message: "the VM driver was handed a resource of another kind".into(),
                }
                .into());
            };
            declared.insert(resource.metadata.name.as_str());
            let read = diff::HostRead {
                vms: &host,
                files: &files,
                now,
                stale_kernel_caches: &stale_kernel_caches,
            };
            let change = diff::declared(resource, spec, read, context, &self.backends, &self.roots)
                .map_err(|cause| VmError::InvalidChange {
                    vm: resource.metadata.name.to_string(),
                    reason: cause.to_string(),
                })?;
            changes.push(change);
        }
        changes.extend(diff::pruned(
            &declared,
            &host,
            context,
            &stale_kernel_caches,
        ));
        Ok(changes)
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        Ok(apply::apply(self.host.as_ref(), change, step).await?)
    }

    /// A VM process that ends is announced at once (`watch.rs`).
    fn watch(&self, sink: WatchSink) -> Result<Watching, DriverError> {
        Ok(watch::start(sink, &self.roots)?)
    }

    /// The guest's shutdown timeout (declared, or the recorded one for a delete) plus
    /// what launching and a hard stop take.
    fn step_budget(&self, change: &Change) -> Duration {
        let declared = change
            .desired
            .as_deref()
            .and_then(|r| r.spec.get::<VirtualMachineSpec>())
            .map(diff::shutdown_timeout);
        let recorded = change
            .observed_as::<VmSnapshot>()
            .and_then(|s| s.observed.dir.as_ref())
            .and_then(|dir| dir.record())
            .map(|record| diff::shutdown_timeout(&record.spec));
        declared.max(recorded).unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT) + STEP_OVERHEAD
    }
}
