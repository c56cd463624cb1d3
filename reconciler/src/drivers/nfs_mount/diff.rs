//! The NfsMount decision table: declared mounts, the mount table and gitvisor's records
//! in, one [`Change`] per declared or pruned mount out. Pure: the server's reachability
//! and the holders of mounts about to go were asked before (`mod.rs`).
//!
//! Ownership follows [`crate::contract::ownership`]: the marker is gitvisor's record of
//! the mount (`seam::MountRecord`: source, path and the kernel's mount ID), the record
//! half is the state store.
//!
//! | at the declared path                         | plan                                  |
//! |----------------------------------------------|---------------------------------------|
//! | nothing; ours mounted at the old path        | `Update` (path): unmount, mount here  |
//! | nothing                                      | `Create`                              |
//! | a mount that is not ours                     | `Conflict` (`Update` with adopt)      |
//! | ours, source/readOnly/version/options differ | `Update`: unmount, mount again        |
//! | ours, as declared                            | `NoOp`                                |
//!
//! A server that does not answer does not change the decision; the change says so,
//! and the mount fails fast in apply (the share stays as it is until it is back).
//! A pruned mount (a record whose resource is no longer declared) is a `Delete`:
//! unmounted only when the mount at its path is the one gitvisor made; a mount someone
//! else made there is left, and only the record goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::NfsMountSpec;
use super::mountinfo::MountEntry;
use super::seam::{MountRecord, NfsHost};
use crate::contract::{
    Action, Change, Effect, Evidence, FieldChange, Marker, Ownership, PlanContext, Prune,
};
use crate::model::{Kind, Name, Resource, ResourceId};

/// What apply needs of one mount, taken from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMount {
    pub name: String,
    /// `server:/export` to mount (empty for a delete).
    pub source: String,
    /// Where to mount it.
    pub path: String,
    pub options: Vec<String>,
    /// The mount to take away first (a remount, a move, a prune); `None`: nothing.
    pub current: Option<MountEntry>,
    /// Mount (again) after taking `current` away; `false` for a delete, and for an
    /// adoption that changes nothing but the record.
    pub mount: bool,
    /// Why the server did not answer at plan time.
    pub unreachable: Option<String>,
}

/// What the plan knows besides the declarations.
pub struct Planning<'a> {
    pub host: &'a NfsHost,
    pub context: &'a PlanContext,
    /// Per server: `Err(why)` when it did not answer.
    pub reachable: &'a BTreeMap<String, Result<(), String>>,
    pub state_dir: &'a std::path::Path,
}

/// The marker of `entry`: gitvisor's record describes it, or not.
pub fn marker(entry: &MountEntry, record: Option<&MountRecord>) -> Marker {
    match record {
        Some(record) if record.describes(entry) => Marker::Ours,
        Some(_) => Marker::Foreign(format!(
            "{} ({}), not the mount gitvisor recorded",
            entry.source, entry.fs_type
        )),
        None => Marker::Absent,
    }
}

/// The change for one declared mount.
pub fn declared(resource: &Arc<Resource>, spec: &NfsMountSpec, planning: &Planning<'_>) -> Change {
    let id = resource.id();
    let name = id.name.as_str().to_owned();
    let path = spec
        .mount_path(&name, planning.state_dir)
        .to_string_lossy()
        .into_owned();
    let unreachable = planning
        .reachable
        .get(&spec.server)
        .and_then(|r| r.as_ref().err().cloned());
    let mut observed = ObservedMount {
        name: name.clone(),
        source: spec.source(),
        path: path.clone(),
        options: spec.mount_options(),
        current: None,
        mount: true,
        unreachable: unreachable.clone(),
    };
    let change = Change::new(id.clone(), Action::NoOp).with_desired(Arc::clone(resource));
    let change = match &unreachable {
        Some(why) => change.with_reason(format!(
            "share unreachable: server {} does not answer ({why}); gitvisor does not wait for it, and what does not use the share carries on",
            spec.server
        )),
        None => change,
    };
    let record = planning.host.records.get(&name);

    let Some(entry) = planning.host.mount_at(&path) else {
        // Moved: ours still mounted at the old path.
        if let Some(record) = record
            && record.path != path
            && let Some(old) = planning.host.mount_at(&record.path)
            && record.describes(old)
        {
            observed.current = Some(old.clone());
            return Change {
                action: Action::Update,
                ..change
            }
            .with_fields(vec![FieldChange::new(
                "path",
                record.path.clone(),
                path,
                Effect::Restart,
            )])
            .with_observed(observed);
        }
        // Unmounted behind gitvisor's back (its record and the store say it made it):
        // mounted again. Otherwise a first mount.
        let change = if planning.context.is_recorded(&id) && record.is_some() {
            Change {
                action: Action::Update,
                ..change
            }
            .with_fields(vec![FieldChange::new("mounted", false, true, Effect::Hot)])
            .with_first_reason(format!(
                "{path} is not mounted any more (unmounted by hand?): mounted again"
            ))
        } else {
            Change {
                action: Action::Create,
                ..change
            }
            .with_fields(vec![
                FieldChange::new(
                    "source",
                    serde_json::Value::Null,
                    spec.source(),
                    Effect::Hot,
                ),
                FieldChange::new("path", serde_json::Value::Null, path.clone(), Effect::Hot),
            ])
        };
        return change.with_observed(observed);
    };

    let evidence = Evidence::new(marker(entry, record), planning.context.is_recorded(&id));
    let adopting = match evidence.declared(
        format_args!("the mount at {path} ({} {})", entry.fs_type, entry.source),
        resource.metadata.adopt(),
    ) {
        Ownership::Ours => false,
        Ownership::Adopt => true,
        Ownership::Conflict(reason) => {
            return Change {
                action: Action::Conflict,
                ..change
            }
            .with_first_reason(reason);
        }
    };
    if adopting && !entry.is_nfs() {
        return Change {
            action: Action::Conflict,
            ..change
        }
        .with_first_reason(format!(
            "the mount at {path} is {} ({}), not an NFS share: gitvisor will not unmount it to adopt it; unmount it by hand or choose another spec.path",
            entry.fs_type, entry.source
        ));
    }
    let fields = drift(spec, entry);
    observed.current = Some(entry.clone());
    if fields.is_empty() && !adopting {
        return change;
    }
    observed.mount = !fields.is_empty();
    let change = Change {
        action: Action::Update,
        ..change
    }
    .with_fields(fields);
    let change = if adopting {
        change.with_first_reason(format!(
            "adopting the mount at {path} (gitvisor.dev/adopt): gitvisor records it as its own"
        ))
    } else {
        change.with_first_reason(format!(
            "the mount at {path} differs from the declaration: unmounted and mounted again"
        ))
    };
    change.with_observed(observed)
}

/// What differs between `spec` and the mount gitvisor made (`entry`): each a field that
/// only mounting again changes.
pub fn drift(spec: &NfsMountSpec, entry: &MountEntry) -> Vec<FieldChange> {
    let mut fields = Vec::new();
    let restart =
        |path: &str, old: String, new: String| FieldChange::new(path, old, new, Effect::Restart);
    if !entry.is_nfs() || entry.source != spec.source() {
        fields.push(restart("source", entry.source.clone(), spec.source()));
    }
    if entry.read_only() != spec.read_only {
        fields.push(FieldChange::new(
            "readOnly",
            entry.read_only(),
            spec.read_only,
            Effect::Restart,
        ));
    }
    let have = entry.super_map();
    if let Some(version) = have.get("vers") {
        let matches = if spec.version == "4" {
            version.starts_with('4')
        } else {
            *version == spec.version || (spec.version == "4.0" && *version == "4")
        };
        if !matches {
            fields.push(restart(
                "version",
                (*version).to_owned(),
                spec.version.clone(),
            ));
        }
    }
    for option in spec.mount_options() {
        let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
        let differs = match key {
            "vers" | "ro" | "rw" | "retry" => None,
            "soft" | "hard" => {
                let other = if key == "soft" { "hard" } else { "soft" };
                (have.contains_key(other) && !have.contains_key(key))
                    .then(|| (other.to_owned(), key.to_owned()))
            }
            "noatime" | "nodiratime" | "relatime" | "nosuid" | "nodev" | "noexec" => {
                (!entry.mount_options.iter().any(|o| o == key))
                    .then(|| ("absent".to_owned(), key.to_owned()))
            }
            _ if !value.is_empty() => have
                .get(key)
                .filter(|found| **found != value)
                .map(|found| ((*found).to_owned(), value.to_owned())),
            _ => None,
        };
        if let Some((old, new)) = differs {
            fields.push(restart(&format!("options.{key}"), old, new));
        }
    }
    fields
}

/// A delete for every record whose resource is no longer declared.
pub fn pruned(declared: &BTreeSet<&str>, planning: &Planning<'_>) -> Vec<Change> {
    let mut deletes = Vec::new();
    for (name, record) in &planning.host.records {
        if declared.contains(name.as_str()) {
            continue;
        }
        let Ok(parsed) = Name::parse(name) else {
            continue;
        };
        let id = ResourceId::new(Kind::NfsMount, parsed);
        let recorded = planning.context.is_recorded(&id);
        let entry = planning.host.mount_at(&record.path);
        // No mount there: the record is all that is left, and it is gitvisor's.
        let marker = entry.map_or(Marker::Ours, |e| marker(e, Some(record)));
        let ours = marker == Marker::Ours;
        match Evidence::new(Marker::Ours, recorded).undeclared() {
            Prune::Delete => {}
            Prune::KeepAndWarn(why) => {
                tracing::warn!(record = %name, "NfsMount record: {why}");
                continue;
            }
            Prune::Keep => continue,
        }
        let current = entry.filter(|_| ours).cloned();
        let mut change = Change::new(id, Action::Delete).with_fields(vec![FieldChange::new(
            "path",
            record.path.clone(),
            serde_json::Value::Null,
            Effect::Recreate,
        )]);
        change = match (&current, entry) {
            (Some(_), _) => change.with_reason(format!(
                "no longer declared: {} is unmounted from {} (the data stays on the server)",
                record.source, record.path
            )),
            (None, Some(other)) => change.with_reason(format!(
                "no longer declared; the mount at {} ({} {}) is not the one gitvisor made, so it stays: only gitvisor's record goes",
                record.path, other.fs_type, other.source
            )),
            (None, None) => change.with_reason(format!(
                "no longer declared and not mounted at {}: gitvisor forgets it",
                record.path
            )),
        };
        deletes.push(change.with_observed(ObservedMount {
            name: name.clone(),
            source: String::new(),
            path: record.path.clone(),
            options: Vec::new(),
            current,
            mount: false,
            unreachable: None,
        }));
    }
    deletes
}
