//! The kinds this build has: one [`Registration`] per kind, each made in its driver's
//! folder (`network/kind.rs`, …) and listed once in [`BUILT_IN`].
//!
//! A registration is everything the engine needs of a kind: how to read its document
//! (the loader), its document schema (`gitvisor schema`), its host probe (`gitvisor
//! doctor`) and how to connect its driver (the reconciler). The engine reaches a kind only
//! through here, so a new kind is its folder plus one line in [`BUILT_IN`] (and its name
//! in `Kind::BUILT_IN`, which the model parses `Kind/name` against before any driver is
//! connected); a kind defined outside this crate is one [`register`] call before
//! anything is loaded.
//!
//! `every_kind_has_exactly_one_driver` checks the list: one registration per kind name,
//! and every kind the model knows has one.

use std::path::PathBuf;
use std::sync::RwLock;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::probe::Facility;
use super::{container, network, vm, volume};
use crate::contract::{Driver, DriverError, Drivers};
use crate::manifest::de::{self, ReadDocument, Removed};
use crate::manifest::tree::Tree;
use crate::model::{Document, Kind, KindSpec, KindTaken, Metadata, Spec};

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

/// One kind of this build: its name, how its documents read, its schema, its host probe
/// and its driver. Made by [`Registration::new`] for the kind's spec type.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    pub kind: Kind,
    read_document: ReadDocument,
    schema: fn() -> serde_json::Value,
    pub probe: Probe,
    pub connect: Connect,
}

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
    registry().into_iter().find(|r| r.kind == kind)
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
