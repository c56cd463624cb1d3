//! The drivers this build has: one [`Registration`] per kind, in [`REGISTRY`].
//!
//! This list is the only place that names them. The engine connects them from it
//! ([`connect_all`]), and `gitvisor doctor` derives from it which kinds this build can
//! apply ([`BUILT_KINDS`](super::probe::BUILT_KINDS)), so the two cannot disagree. A new
//! driver adds its line here and nothing else outside its folder.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Collected, Console, ExecRequest, ExtraError, Helper, Prepared, StatusTable};
use super::{container, network, vm, volume};
use crate::contract::{Driver, DriverError, Drivers};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{Kind, Name, OVERCOMMIT_ANNOTATION};

/// What a driver may need to know about this gitvisor when it connects: where runtime
/// files go (a VM's run dir, a container runtime's state root live below it) and where
/// lasting state goes (a container image store lives below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// `--run-dir`, `/run/gitvisor` by default.
    pub run_dir: PathBuf,
    /// `--state-dir`, `/var/lib/gitvisor` by default.
    pub state_dir: PathBuf,
}

/// One driver of this build: its kind, how to connect it to this host, and its
/// validation rules.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub kind: Kind,
    /// Opens the driver's seam on this host (a netlink socket, a runtime client). Called
    /// inside the Tokio runtime.
    pub connect: fn(&HostSettings) -> Result<Box<dyn Driver>, DriverError>,
    /// The kind's rules for one resource of this kind on its own (limits of what it
    /// becomes on the host, one-of fields), run by `crate::validate` on every document
    /// of the kind that could be read; each finding points at a field of it.
    pub check: fn(&LoadedResource, &mut Vec<Diagnostic>),
    /// The kind's rules across the resources selected for this host (every kind's, in
    /// file order, each name once): what the host has only one of, like an address, a
    /// MAC or a published host port. Run once per revision; a finding about two
    /// declarations is reported at the later one and names the earlier one's place.
    pub check_revision: fn(&[&LoadedResource], &mut Vec<Diagnostic>),
    /// The `gitvisor.dev/` annotations about this kind only (`"true"` or `"false"`), each
    /// with what it is about, for the message when another kind carries it.
    pub annotations: &'static [KindAnnotation],
    /// What the kind adds to the host's status beyond each resource's state (`gitvisor
    /// status`, the controller's `GET /v1/status`): the DHCP leases of the bridges.
    pub status_tables: &'static [StatusTable],
    /// The kind's housekeeping, which the controller runs once an hour when `gitvisor
    /// run --image-gc-after` gives a grace period: what no resource has used for that long
    /// is removed (the container image store). Starts its work on a blocking thread and
    /// returns at once; reports through tracing.
    pub maintenance: Option<fn(&HostSettings, Duration)>,
    /// `gitvisor image prune [--dry-run]`: the same collection at once, with no grace
    /// period, saying what went (with `dry_run`, what would go).
    pub collect: Option<CollectHook>,
    /// `gitvisor logs NAME [-f]`: prints what resource NAME of the kind logged, and with
    /// `follow` what it logs next, until stdout closes.
    pub logs: Option<LogsHook>,
    /// `gitvisor console NAME`: where resource NAME's serial console is, or why this
    /// host has none.
    pub console: Option<ConsoleHook>,
    /// `gitvisor exec NAME -- COMMAND…`: checks resource NAME (it is gitvisor's and runs)
    /// and builds the command that runs the request in it.
    pub exec: Option<ExecHook>,
    /// A process of the kind's own that gitvisor starts as a hidden subcommand (the
    /// container supervisor, `gitvisor container-shim`).
    pub helper: Option<Helper>,
}

/// [`Registration::collect`]: the settings, and whether this is a dry run.
pub type CollectHook = fn(&HostSettings, bool) -> Result<Collected, ExtraError>;

/// [`Registration::logs`]: the settings, the resource's name, and whether to follow.
pub type LogsHook = fn(&HostSettings, &str, bool) -> Result<(), ExtraError>;

/// [`Registration::console`].
pub type ConsoleHook = fn(&HostSettings, &Name) -> Result<Console, String>;

/// [`Registration::exec`].
pub type ExecHook = for<'a> fn(
    &'a HostSettings,
    &'a Name,
    &'a ExecRequest,
) -> BoxFuture<'a, Result<Prepared, ExtraError>>;

/// An annotation of one kind: its key, and what it is about (`a guest's memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindAnnotation {
    pub key: &'static str,
    pub about: &'static str,
}

/// A `check_revision` for a kind with no rules across resources.
fn no_revision_rules(_: &[&LoadedResource], _: &mut Vec<Diagnostic>) {}

/// Every driver of this build, one line each.
pub(super) const REGISTRY: &[Registration] = &[
    Registration {
        kind: Kind::Bridge,
        connect: network::ManagedBridgeDriver::connect_driver,
        check: network::validate::check,
        check_revision: network::validate::check_revision,
        annotations: &[],
        status_tables: &[network::LEASES_TABLE],
        maintenance: None,
        collect: None,
        logs: None,
        console: None,
        exec: None,
        helper: None,
    },
    Registration {
        kind: Kind::VirtualMachine,
        connect: vm::VmDriver::connect_driver,
        check: vm::validate::check,
        check_revision: vm::validate::check_revision,
        annotations: &[KindAnnotation {
            key: OVERCOMMIT_ANNOTATION,
            about: "a guest's memory",
        }],
        status_tables: &[],
        maintenance: None,
        collect: None,
        logs: None,
        console: Some(vm::paths::console),
        exec: None,
        helper: None,
    },
    Registration {
        kind: Kind::Volume,
        connect: volume::VolumeDriver::connect_driver,
        check: volume::validate::check,
        check_revision: no_revision_rules,
        annotations: &[],
        status_tables: &[],
        maintenance: None,
        collect: None,
        logs: None,
        console: None,
        exec: None,
        helper: None,
    },
    Registration {
        kind: Kind::Container,
        connect: container::ContainerDriver::connect_driver,
        check: container::validate::check,
        check_revision: no_revision_rules,
        annotations: &[],
        status_tables: &[],
        maintenance: Some(container::collect_images),
        collect: Some(container::collect_now),
        logs: Some(container::logs::print_logs),
        console: None,
        exec: Some(container::exec::prepare),
        helper: Some(Helper {
            command: "container-shim",
            run: container::shim::run_command,
        }),
    },
];

/// Every driver of this build.
pub fn registry() -> &'static [Registration] {
    REGISTRY
}

/// Every status table of this build's kinds, in registry order.
pub fn status_tables() -> impl Iterator<Item = &'static StatusTable> {
    REGISTRY
        .iter()
        .flat_map(|registration| registration.status_tables)
}

/// Connects every driver of this build to this host; the first failure is the answer (a
/// host where one cannot connect is not one gitvisor can converge).
pub fn connect_all(settings: &HostSettings) -> Result<Drivers, DriverError> {
    REGISTRY
        .iter()
        .map(|registration| (registration.connect)(settings))
        .collect::<Result<Vec<_>, _>>()
        .map(Drivers::new)
}

/// The kinds of `registry`, in order, as an array a `const` can hold.
pub(super) const fn kinds<const N: usize>(registry: &[Registration]) -> [Kind; N] {
    let mut kinds = [Kind::Bridge; N];
    let mut at = 0;
    while at < N {
        kinds[at] = registry[at].kind;
        at += 1;
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build that lost a driver's line, or registered a kind twice, fails here (the
    /// engine would connect two drivers for one kind, or plan a kind as unsupported).
    #[test]
    fn every_kind_has_exactly_one_driver() {
        for kind in Kind::ALL {
            let count = registry().iter().filter(|r| r.kind == kind).count();
            assert_eq!(count, 1, "{kind} has {count} drivers registered");
        }
        assert_eq!(registry().len(), Kind::ALL.len());
    }

    /// `kinds` (what doctor's `BUILT_KINDS` is made of) lists any registry in its order,
    /// not the order of `Kind` nor one kind repeated.
    #[test]
    fn kinds_lists_a_registry_in_its_own_order() {
        let registry = [
            Registration {
                kind: Kind::Container,
                connect: container::ContainerDriver::connect_driver,
                check: container::validate::check,
                check_revision: no_revision_rules,
                annotations: &[],
                status_tables: &[],
                maintenance: None,
                collect: None,
                logs: None,
                console: None,
                exec: None,
                helper: None,
            },
            Registration {
                kind: Kind::Bridge,
                connect: network::ManagedBridgeDriver::connect_driver,
                check: network::validate::check,
                check_revision: network::validate::check_revision,
                annotations: &[],
                status_tables: &[],
                maintenance: None,
                collect: None,
                logs: None,
                console: None,
                exec: None,
                helper: None,
            },
            Registration {
                kind: Kind::Volume,
                connect: volume::VolumeDriver::connect_driver,
                check: volume::validate::check,
                check_revision: no_revision_rules,
                annotations: &[],
                status_tables: &[],
                maintenance: None,
                collect: None,
                logs: None,
                console: None,
                exec: None,
                helper: None,
            },
        ];
        assert_eq!(
            kinds::<3>(&registry),
            [Kind::Container, Kind::Bridge, Kind::Volume]
        );
        assert_eq!(kinds::<1>(&registry[2..]), [Kind::Volume]);
    }
}
