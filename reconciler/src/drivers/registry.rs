//! The kinds this build has: one [`Registration`] per kind, each made in its driver's
//! folder (`network/kind.rs`, …) and listed once in [`BUILT_IN`].
//!
//! A registration is everything the engine needs of a kind: how to read its document
//! (the loader), its document schema (`gitvisor schema`), its validation rules (one
//! resource, and across the revision), its host probe (`gitvisor doctor`), how to connect
//! its driver (the reconciler), and the extras the CLI and the API reach it for (status
//! tables, logs, console, exec, housekeeping, a helper subcommand). The engine reaches a kind only
//! through here, so a new kind is its folder plus one line in [`BUILT_IN`] (and its name
//! in `Kind::BUILT_IN`, which the model parses `Kind/name` against before any driver is
//! connected); a kind defined outside this crate is one [`register`] call before
//! anything is loaded.
//!
//! `every_kind_has_exactly_one_driver` checks the list: one registration per kind name,
//! and every kind the model knows has one.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::probe::Facility;
use super::{Collected, Console, ExecRequest, ExtraError, Helper, Prepared, StatusTable};
use super::{container, network, nfs_mount, vm, volume};
use crate::contract::{Driver, DriverError, Drivers};
use crate::manifest::de::{self, ReadDocument, Removed};
use crate::manifest::tree::Tree;
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{Document, Kind, KindSpec, KindTaken, Metadata, Name, Spec};

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

/// What the host offers a kind (`gitvisor doctor`): its folder's probe.
pub type Probe = fn() -> BoxFuture<'static, Vec<Facility>>;

/// Opens a driver's seam on this host (a netlink socket, a runtime client). Called inside
/// the Tokio runtime.
pub type Connect = fn(&HostSettings) -> Result<Box<dyn Driver>, DriverError>;

/// One kind of this build: its name, how its documents read, its schema, its rules, its
/// host probe, its driver and its extras. Made by [`Registration::new`] for the kind's spec
/// type, with the hooks it has set by name over it (`Registration { check: …,
/// ..Registration::new::<S>(probe, connect) }`); a hook left out is "none".
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub kind: Kind,
    /// Reads a whole document of the kind from the loader's tree (set by `new`).
    pub read_document: ReadDocument,
    /// The kind's document schema (set by `new`).
    pub schema: fn() -> serde_json::Value,
    pub probe: Probe,
    pub connect: Connect,
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

/// A `check` for a kind with no rules of its own beyond its schema.
fn no_rules(_: &LoadedResource, _: &mut Vec<Diagnostic>) {}

/// A `check_revision` for a kind with no rules across resources.
fn no_revision_rules(_: &[&LoadedResource], _: &mut Vec<Diagnostic>) {}

impl Registration {
    /// The registration of the kind whose spec type is `S` (`S::KIND`).
    pub const fn new<S: KindSpec + DeserializeOwned + JsonSchema>(
        probe: Probe,
        connect: Connect,
    ) -> Self {
        Registration {
            kind: S::KIND,
            read_document: de::read_document::<S>,
            schema: document_schema::<S>,
            probe,
            connect,
            check: no_rules,
            check_revision: no_revision_rules,
            annotations: &[],
            status_tables: &[],
            maintenance: None,
            collect: None,
            logs: None,
            console: None,
            exec: None,
            helper: None,
        }
    }

    /// Reads a whole document of this kind from the loader's tree.
    pub(crate) fn read_document(
        &self,
        tree: &Tree,
        removed: &Removed,
    ) -> Result<(Metadata, Spec), de::Error> {
        (self.read_document)(tree, removed)
    }

    /// The JSON Schema of this kind's document, as generated from its types (`crate::schema`
    /// adds the `$id`, title and constants).
    pub fn schema(&self) -> serde_json::Value {
        (self.schema)()
    }
}

fn document_schema<S: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Document<S>))
        .unwrap_or_else(|_| serde_json::json!({}))
}

/// Every kind of this build, one line each (connected in this order).
const BUILT_IN: &[Registration] = &[
    network::REGISTRATION,
    vm::REGISTRATION,
    volume::REGISTRATION,
    nfs_mount::REGISTRATION,
    container::REGISTRATION,
];

/// Kinds registered at run time ([`register`]), after [`BUILT_IN`].
static ADDED: RwLock<Vec<Registration>> = RwLock::new(Vec::new());

/// Why [`register`] refused a kind.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    NameTaken(#[from] KindTaken),
    #[error("kind {0} already has a driver registered: register each kind once")]
    AlreadyRegistered(Kind),
}

/// Adds a kind defined outside this crate's folders (a test's, a plugin build's): from
/// now on its documents load, its schema is listed, doctor probes it and the reconciler
/// connects its driver. Call it before loading anything.
pub fn register(registration: Registration) -> Result<(), RegisterError> {
    let mut added = ADDED.write().unwrap_or_else(|e| e.into_inner());
    if BUILT_IN
        .iter()
        .chain(added.iter())
        .any(|known| known.kind.as_str() == registration.kind.as_str())
    {
        return Err(RegisterError::AlreadyRegistered(registration.kind));
    }
    Kind::register(registration.kind)?;
    added.push(registration);
    Ok(())
}

/// Every kind of this build, built-in first.
pub fn registry() -> Vec<Registration> {
    let added = ADDED.read().unwrap_or_else(|e| e.into_inner());
    BUILT_IN.iter().chain(added.iter()).copied().collect()
}

/// The registration of `kind`, if this build has it.
pub fn registration(kind: Kind) -> Option<Registration> {
    // Asked once per document loaded: no list is built for it.
    if let Some(built_in) = BUILT_IN.iter().find(|r| r.kind == kind) {
        return Some(*built_in);
    }
    let added = ADDED.read().unwrap_or_else(|e| e.into_inner());
    added.iter().find(|r| r.kind == kind).copied()
}

/// Every status table of this build's kinds, in registry order.
pub fn status_tables() -> impl Iterator<Item = &'static StatusTable> {
    registry()
        .into_iter()
        .flat_map(|registration| registration.status_tables.iter())
}

/// Connects every driver of this build to this host; the first failure is the answer (a
/// host where one cannot connect is not one gitvisor can converge).
pub fn connect_all(settings: &HostSettings) -> Result<Drivers, DriverError> {
    registry()
        .iter()
        .map(|registration| (registration.connect)(settings))
        .collect::<Result<Vec<_>, _>>()
        .map(Drivers::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build that lost a kind's line, or registered a kind twice, fails here (the
    /// engine would connect two drivers for one kind, or load a kind it cannot apply).
    #[test]
    fn every_kind_has_exactly_one_driver() {
        let registry = registry();
        for kind in Kind::all() {
            let count = registry
                .iter()
                .filter(|r| r.kind.as_str() == kind.as_str())
                .count();
            assert_eq!(count, 1, "{kind} has {count} drivers registered");
        }
        for registration in &registry {
            assert!(
                Kind::all().contains(&registration.kind),
                "{} has a driver but does not parse: add it to Kind::BUILT_IN (model/kind.rs)",
                registration.kind
            );
        }
        assert_eq!(registry.len(), Kind::all().len());
    }

    /// Each registration reads its own kind's documents and describes its own schema.
    #[test]
    fn each_registration_is_its_own_kind() {
        for registration in registry() {
            let schema = registration.schema();
            assert_eq!(
                schema["properties"]["spec"]["$ref"],
                format!("#/$defs/{}Spec", registration.kind),
                "{}",
                registration.kind
            );
        }
    }

    #[test]
    fn a_kind_registered_twice_is_refused() {
        let error = register(network::REGISTRATION).unwrap_err();
        assert!(
            matches!(error, RegisterError::AlreadyRegistered(Kind::Bridge)),
            "{error}"
        );
    }
}
