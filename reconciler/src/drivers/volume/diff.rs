//! The volume decision table: declared Volumes and the host's LVs in, one [`Change`]
//! per declared or pruned volume out. Pure: no I/O (the images a creation needs were
//! inspected before, by `mod.rs`).
//!
//! Ownership follows the shared rules of [`crate::contract::ownership`]: the marker is
//! the LV tags `gitvisor:managed` + `gitvisor:id=Volume/NAME` (`tags.rs`), set by the
//! same `lvcreate` that makes the LV, so there is no crash window to except.
//!
//! What is on the host under the declared name, in the declared volume group, decides:
//!
//! | on the host                                       | plan                               |
//! |---------------------------------------------------|------------------------------------|
//! | nothing                                           | `Create`, if it can be done        |
//! | nothing; ours in another VG (volumeGroup changed) | `Replace` if reclaimPolicy Delete  |
//! | an LV that is not ours (no marker, or no record)  | `Conflict` (`Update` with adopt)   |
//! | a thin pool or another kind of LV, not ours       | `Conflict`                         |
//! | ours, tagged `incomplete` (creation interrupted)  | `Replace`                          |
//! | ours, another thin pool or filesystem             | `Replace` if reclaimPolicy Delete  |
//! | ours, smaller than declared                       | `Update` (grow, filesystem too)    |
//! | ours, larger than declared                        | `Conflict`: shrinking is refused   |
//! | ours, as declared                                 | `NoOp`                             |
//!
//! What cannot be done and is known before apply is planned as a `Conflict` with the
//! reason, so `plan` exits 1 and apply touches nothing: a missing volume group or thin
//! pool, a full thin pool, not enough free extents (counted across every volume this
//! plan creates or grows in the same group), an unreadable source image or one larger
//! than the volume, a shrink, a replace with `reclaimPolicy: Retain`. A size that is
//! not a whole number of extents is rounded up and the plan says so.
//!
//! A pruned volume (ours, no longer declared) is a `Delete`: with the recorded
//! `reclaimPolicy: Retain` apply only removes gitvisor's tags (the LV and its data stay,
//! and the reason gives the path); with `Delete` it removes the LV, unless it is open
//! or has classic snapshots (apply refuses, the plan warns).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::drift::Drift;
use super::observed::{HostVolumes, ObservedVolume, Origin};
use super::seam::{ImageInfo, LvKind, LvState, VgState, fs_name};
use super::size::{extents, round_up, show_bytes};
use super::tags;
use crate::contract::{
    Action, Change, Effect, Evidence, FieldChange, Ownership, PlanContext, Prune,
};
use crate::drivers::volume::{Filesystem, ReclaimPolicy, VolumeSpec};
use crate::model::{Kind, Resource, ResourceId};

/// What the plan knows besides the host: the store's records, the revision, the images
/// inspected, and the free extents not yet spent by earlier changes of this plan.
pub(crate) struct Planning<'a> {
    pub host: &'a HostVolumes,
    pub context: &'a PlanContext,
    pub images: &'a BTreeMap<String, Result<ImageInfo, String>>,
    pub free: BTreeMap<String, u64>,
    /// Images a creation needed that `images` lacks: the caller inspects them and plans
    /// again.
    pub uninspected: BTreeSet<String>,
}

/// The change for one declared volume.
pub(crate) fn declared(
    resource: &Arc<Resource>,
    spec: &VolumeSpec,
    planning: &mut Planning<'_>,
) -> Change {
    let id = resource.id();
    let name = id.name.as_str();
    let change = Change::new(id.clone(), Action::NoOp).with_desired(Arc::clone(resource));
    let Some(vg) = planning.host.vg(spec.lvm_group()) else {
        let have = planning.host.vg_names();
        let have = if have.is_empty() {
            "it has none".to_owned()
        } else {
            format!("it has {}", have.join(", "))
        };
        return refused(
            change,
            format!(
                "volume group {} does not exist on this host ({have}); create it (vgcreate) or fix spec.volumeGroup",
                spec.lvm_group()
            ),
            ObservedVolume::new(spec.lvm_group(), spec.size.bytes()),
        );
    };
    let size = round_up(spec.size.bytes(), vg.extent_size);
    let mut observed = ObservedVolume::new(&vg.name, size);
    let mut notes = Vec::new();
    if size != spec.size.bytes() {
        notes.push(format!(
            "size {} is not a whole number of {}'s {} extents: rounded up to {}",
            spec.size,
            vg.name,
            show_bytes(vg.extent_size),
            show_bytes(size)
        ));
    }

    let Some(lv) = planning.host.lv(&vg.name, name) else {
        if let Some(old) = planning
            .host
            .ours_elsewhere(&id.name, &vg.name, planning.context)
        {
            let fields = vec![FieldChange::new(
                "volumeGroup",
                old.vg.clone(),
                vg.name.clone(),
                Effect::Recreate,
            )];
            observed.replaced = Some(old.clone());
            if spec.reclaim_policy != ReclaimPolicy::Delete {
                return refused(
                    change.with_fields(fields),
                    recreate_refusal(name, "volumeGroup", &old.vg, &vg.name),
                    observed,
                );
            }
            return creation(
                Change {
                    action: Action::Replace,
                    ..change
                }
                .with_fields(fields)
                .with_reason(format!(
                    "moving to volume group {} recreates the volume: the data in {} is deleted (reclaimPolicy: Delete)",
                    vg.name,
                    old.full_name()
                )),
                resource,
                spec,
                vg,
                observed,
                notes,
                planning,
            );
        }
        return creation(
            Change {
                action: Action::Create,
                ..change
            }
            .with_fields(creation_fields(spec, size)),
            resource,
            spec,
            vg,
            observed,
            notes,
            planning,
        );
    };

    observed.lv = Some(lv.clone());
    let recorded = planning.context.is_recorded(&id);
    let evidence = Evidence::new(tags::marker(lv, name), recorded);
    if !evidence.is_ours() && !matches!(lv.kind, LvKind::Plain | LvKind::Thin { .. }) {
        return refused(
            change,
            format!(
                "logical volume {} exists and is {}; gitvisor will not touch it",
                lv.full_name(),
                describe(&lv.kind)
            ),
            observed,
        );
    }
    let adopting = match evidence.declared(
        format_args!("logical volume {}", lv.full_name()),
        resource.metadata.adopt(),
    ) {
        Ownership::Ours => false,
        Ownership::Adopt => true,
        Ownership::Conflict(reason) => return refused(change, reason, observed),
    };

    if !adopting && lv.has_tag(tags::INCOMPLETE) {
        observed.replaced = Some(lv.clone());
        observed.lv = None;
        return creation(
            Change {
                action: Action::Replace,
                ..change
            }
            .with_fields(creation_fields(spec, size))
            .with_reason(format!(
                "an earlier creation of {} stopped before the volume was written completely; the incomplete volume is removed and made again",
                lv.full_name()
            )),
            resource,
            spec,
            vg,
            observed,
            notes,
            planning,
        );
    }

    // Fields only a recreation can change.
    let mut recreate = Vec::new();
    let is_snapshot = spec.source.as_ref().and_then(|s| s.snapshot_of()).is_some();
    if !is_snapshot && spec.thin_pool.as_deref() != lv.pool() && !adopting {
        recreate.push(FieldChange::new(
            "thinPool",
            lv.pool().map(str::to_owned),
            spec.thin_pool.clone(),
            Effect::Recreate,
        ));
    }
    let made = tags::filesystem_of(lv);
    if let (Some(made), Some(declared)) = (made, spec.filesystem)
        && made != Some(declared)
    {
        recreate.push(FieldChange::new(
            "filesystem",
            made.map(fs_name),
            fs_name(declared),
            Effect::Recreate,
        ));
    }
    if !recreate.is_empty() {
        let what = recreate[0].path.clone();
        let (old, new) = (recreate[0].old.to_string(), recreate[0].new.to_string());
        observed.replaced = Some(lv.clone());
        observed.lv = None;
        if spec.reclaim_policy != ReclaimPolicy::Delete {
            return refused(
                change.with_fields(recreate),
                recreate_refusal(name, &what, &old, &new),
                observed,
            );
        }
        return creation(
            Change {
                action: Action::Replace,
                ..change
            }
            .with_fields(recreate)
            .with_reason(format!(
                "changing {what} recreates the volume: the data in {} is deleted (reclaimPolicy: Delete)",
                lv.full_name()
            )),
            resource,
            spec,
            vg,
            observed,
            notes,
            planning,
        );
    }

    let mut drift = Drift {
        adopt: adopting,
        ..Drift::default()
    };
    if size < lv.size {
        return refused(
            change,
            format!(
                "shrinking is refused: volume {name} ({}) is {} and declares {}; shrinking would destroy the data past the new end. Declare at least {}, or make a new volume and copy the data",
                lv.full_name(),
                show_bytes(lv.size),
                show_bytes(size),
                show_bytes(lv.size)
            ),
            observed,
        );
    }
    if size > lv.size {
        if lv.pool().is_none() {
            let needed = extents(size - lv.size, vg.extent_size);
            if let Err(reason) = spend(planning, vg, needed, name, "grow") {
                return refused(change, reason, observed);
            }
        }
        drift.grow = Some((lv.size, size));
        match made.flatten() {
            Some(filesystem @ (Filesystem::Ext4 | Filesystem::Xfs)) => {
                drift.grow_filesystem = Some(filesystem);
            }
            Some(other) => notes.push(format!(
                "the {} filesystem on it is not grown by gitvisor; grow it by hand after the volume",
                fs_name(other)
            )),
            None if made.is_none() && spec.filesystem.is_some() => notes.push(
                "gitvisor did not make the filesystem on it (adopted), so growing leaves the filesystem as it is".to_owned(),
            ),
            None => {}
        }
    }
    if lv.has_tag(tags::GROW_FS)
        && let Some(filesystem) = made.flatten()
    {
        drift.grow_filesystem = Some(filesystem);
    }
    let recorded_policy = tags::reclaim_of(lv);
    if recorded_policy != Some(spec.reclaim_policy) || adopting {
        drift.reclaim = Some((recorded_policy, spec.reclaim_policy));
    }
    let action = if drift.is_empty() {
        Action::NoOp
    } else {
        Action::Update
    };
    let mut change = Change { action, ..change }.with_fields(drift.fields());
    if adopting {
        change = change.with_first_reason(format!(
            "adopting logical volume {} (gitvisor.dev/adopt): gitvisor's tags are added",
            lv.full_name()
        ));
    }
    observed.drift = drift;
    for note in notes {
        change = change.with_reason(note);
    }
    change.with_observed(observed)
}

/// A create or replace: checks what creation needs (thin pool, free extents, image,
/// origin) and refuses with the reason when something is missing.
fn creation(
    change: Change,
    resource: &Arc<Resource>,
    spec: &VolumeSpec,
    vg: &VgState,
    mut observed: ObservedVolume,
    notes: Vec<String>,
    planning: &mut Planning<'_>,
) -> Change {
    let name = resource.metadata.name.as_str();
    let size = observed.size;
    let source = spec.source.as_ref();
    if let Some(origin_id) = source.and_then(|s| s.snapshot_of()) {
        match snapshot_origin(origin_id, spec, vg, planning) {
            Ok(origin) => {
                if origin.thin && size < origin.size {
                    return refused(
                        change,
                        format!(
                            "a thin snapshot is as big as its origin {} ({}); declare at least that size",
                            origin.name,
                            show_bytes(origin.size)
                        ),
                        observed,
                    );
                }
                if !origin.thin {
                    let needed = extents(size, vg.extent_size).saturating_sub(freed(&observed, vg));
                    if let Err(reason) = spend(planning, vg, needed, name, "create") {
                        return refused(change, reason, observed);
                    }
                }
                observed.origin = Some(origin);
            }
            Err(reason) => return refused(change, reason, observed),
        }
    } else if let Some(pool) = &spec.thin_pool {
        match planning.host.lv(&vg.name, pool) {
            None => {
                return refused(
                    change,
                    format!(
                        "thin pool {}/{pool} does not exist; create it (lvcreate --type thin-pool) or fix spec.thinPool",
                        vg.name
                    ),
                    observed,
                );
            }
            Some(lv) if lv.kind != LvKind::ThinPool => {
                return refused(
                    change,
                    format!(
                        "{} is {}, not a thin pool; fix spec.thinPool",
                        lv.full_name(),
                        describe(&lv.kind)
                    ),
                    observed,
                );
            }
            Some(lv) => {
                if let Some(full) = pool_full(lv) {
                    return refused(change, full, observed);
                }
            }
        }
    } else {
        let needed = extents(size, vg.extent_size).saturating_sub(freed(&observed, vg));
        if let Err(reason) = spend(planning, vg, needed, name, "create") {
            return refused(change, reason, observed);
        }
    }
    if let Some(image) = source.and_then(|s| s.image()) {
        match planning.images.get(image) {
            Some(Ok(info)) => {
                if info.virtual_size > size {
                    return refused(
                        change,
                        format!(
                            "source image {image} holds a {} disk, larger than the volume ({}); declare a size of at least {}",
                            show_bytes(info.virtual_size),
                            show_bytes(size),
                            show_bytes(info.virtual_size)
                        ),
                        observed,
                    );
                }
                observed.image = Some(info.clone());
            }
            Some(Err(why)) => {
                return refused(
                    change,
                    format!("source image {image} cannot be read: {why}"),
                    observed,
                );
            }
            None => {
                planning.uninspected.insert(image.to_owned());
                return refused(
                    change,
                    format!("source image {image} is not inspected yet"),
                    observed,
                );
            }
        }
    }
    let mut change = change;
    if let Some(crate::drivers::volume::VolumeSource::Url { url, .. }) = source {
        change = change.with_reason(format!(
            "the image is downloaded from {url} into gitvisor's image cache (once), verified, then written"
        ));
    }
    for note in notes {
        change = change.with_reason(note);
    }
    change.with_observed(observed)
}

/// Extents a replace frees before it creates (the replaced LV, when in the same VG and
/// not thin).
fn freed(observed: &ObservedVolume, vg: &VgState) -> u64 {
    observed
        .replaced
        .as_ref()
        .filter(|lv| lv.vg == vg.name && matches!(lv.kind, LvKind::Plain | LvKind::Snapshot))
        .map_or(0, |lv| extents(lv.size, vg.extent_size))
}

/// Takes `needed` extents of `vg` for this plan, or says why there are not enough.
fn spend(
    planning: &mut Planning<'_>,
    vg: &VgState,
    needed: u64,
    name: &str,
    what: &str,
) -> Result<(), String> {
    let free = planning.free.entry(vg.name.clone()).or_insert(0);
    if needed > *free {
        let others = if *free < vg.free_extents {
            " after the other volumes this plan creates or grows there"
        } else {
            ""
        };
        return Err(format!(
            "not enough free space in volume group {} to {what} volume {name}: it needs {} ({needed} extents of {}), and {} has {} free{others}; free space or extend the volume group (vgextend)",
            vg.name,
            show_bytes(needed * vg.extent_size),
            show_bytes(vg.extent_size),
            vg.name,
            show_bytes(*free * vg.extent_size),
        ));
    }
    *free -= needed;
    Ok(())
}

fn pool_full(pool: &LvState) -> Option<String> {
    let data = pool.data_percent.unwrap_or(0.0);
    let metadata = pool.metadata_percent.unwrap_or(0.0);
    (data >= 100.0 || metadata >= 100.0).then(|| {
        format!(
            "thin pool {} is full (data {data:.2}%, metadata {metadata:.2}%); a new volume in it could not be written: extend the pool (lvextend) or free space in it",
            pool.full_name()
        )
    })
}

/// The origin of a snapshot volume: declared, in the same VG, and (when on the host
/// already) a volume gitvisor manages.
fn snapshot_origin(
    origin_id: &ResourceId,
    spec: &VolumeSpec,
    vg: &VgState,
    planning: &Planning<'_>,
) -> Result<Origin, String> {
    let Some(origin) = planning.context.declared(origin_id) else {
        return Err(format!(
            "the snapshot's origin {origin_id} is not declared for this host"
        ));
    };
    let Some(origin_spec) = origin.spec.get::<VolumeSpec>() else {
        return Err(format!("the snapshot's origin {origin_id} is not a Volume"));
    };
    if origin_spec.lvm_group() != spec.lvm_group() {
        return Err(format!(
            "a snapshot is in its origin's volume group: {origin_id} is in {}, this volume declares {}",
            origin_spec.lvm_group(),
            spec.lvm_group()
        ));
    }
    let name = origin_id.name.as_str();
    match planning.host.lv(&vg.name, name) {
        Some(lv) => {
            let recorded = planning.context.is_recorded(origin_id);
            if !Evidence::new(tags::marker(lv, name), recorded).is_ours() {
                return Err(format!(
                    "the snapshot's origin {} is not a volume gitvisor manages yet",
                    lv.full_name()
                ));
            }
            Ok(Origin {
                name: name.to_owned(),
                thin: lv.pool().is_some(),
                size: lv.size,
            })
        }
        // Created earlier in the same apply (the graph orders it first).
        None => Ok(Origin {
            name: name.to_owned(),
            thin: origin_spec.thin_pool.is_some(),
            size: round_up(origin_spec.size.bytes(), vg.extent_size),
        }),
    }
}

fn recreate_refusal(name: &str, field: &str, old: &str, new: &str) -> String {
    format!(
        "changing {field} of volume {name} ({old} → {new}) means making a new volume and deleting the old one with its data; refused because reclaimPolicy is Retain. Set reclaimPolicy: Delete to allow it, or revert {field}"
    )
}

fn refused(change: Change, reason: String, observed: ObservedVolume) -> Change {
    Change {
        action: Action::Conflict,
        ..change
    }
    .with_first_reason(reason)
    .with_observed(observed)
}

fn describe(kind: &LvKind) -> String {
    match kind {
        LvKind::Plain => "a logical volume".into(),
        LvKind::Thin { pool } => format!("a thin volume in pool {pool}"),
        LvKind::ThinPool => "a thin pool".into(),
        LvKind::Snapshot => "a snapshot".into(),
        LvKind::Other(segtype) => format!("a {segtype} volume"),
    }
}

/// What a create sets, as the plan shows it (old values are null).
fn creation_fields(spec: &VolumeSpec, size: u64) -> Vec<FieldChange> {
    let mut fields = vec![
        FieldChange::new(
            "volumeGroup",
            serde_json::Value::Null,
            spec.lvm_group().to_owned(),
            Effect::Recreate,
        ),
        FieldChange::new(
            "size",
            serde_json::Value::Null,
            show_bytes(size),
            Effect::Recreate,
        ),
    ];
    if let Some(pool) = &spec.thin_pool {
        fields.push(FieldChange::new(
            "thinPool",
            serde_json::Value::Null,
            pool.clone(),
            Effect::Recreate,
        ));
    }
    if let Some(filesystem) = spec.filesystem {
        fields.push(FieldChange::new(
            "filesystem",
            serde_json::Value::Null,
            fs_name(filesystem),
            Effect::Recreate,
        ));
    }
    if let Some(source) = &spec.source {
        fields.push(FieldChange::new(
            "source",
            serde_json::Value::Null,
            source.to_string(),
            Effect::Recreate,
        ));
    }
    fields
}

/// Deletes for volumes that are gitvisor's (marker and record) and no longer declared.
pub(crate) fn pruned(declared: &BTreeSet<&str>, planning: &Planning<'_>) -> Vec<Change> {
    let mut deletes = Vec::new();
    for lv in planning.host.lvs() {
        let Some(owner) = tags::owner(lv) else {
            continue;
        };
        if declared.contains(owner) || owner != lv.name {
            continue;
        }
        let Ok(name) = crate::model::Name::parse(owner) else {
            continue;
        };
        let id = ResourceId::new(Kind::Volume, name);
        let recorded = planning.context.is_recorded(&id);
        match Evidence::new(tags::marker(lv, owner), recorded).undeclared() {
            Prune::Delete => deletes.push(prune(id, lv, planning.host)),
            Prune::KeepAndWarn(why) => tracing::warn!(lv = %lv.full_name(), "{why}"),
            Prune::Keep => {}
        }
    }
    deletes
}

fn prune(id: ResourceId, lv: &LvState, host: &HostVolumes) -> Change {
    let retain = tags::reclaim_of(lv) != Some(ReclaimPolicy::Delete);
    let mut observed = ObservedVolume::new(&lv.vg, lv.size);
    observed.lv = Some(lv.clone());
    observed.retain = retain;
    observed.snapshots = host.snapshots_of(lv);
    let device = lv.device_path();
    let mut change = Change::new(id, Action::Delete).with_reason("no longer declared");
    if retain {
        change = change.with_reason(format!(
            "reclaimPolicy is Retain: gitvisor forgets the volume; the logical volume {} and its data stay (only gitvisor's tags are removed)",
            device.display()
        ));
    } else {
        change = change.with_reason(format!(
            "reclaimPolicy is Delete: the logical volume {} and its data are removed",
            device.display()
        ));
        if lv.open {
            change = change.with_reason(format!(
                "{} is open now; apply will refuse to remove it while it is in use",
                device.display()
            ));
        }
        if !observed.snapshots.is_empty() {
            change = change.with_reason(format!(
                "it has snapshots ({}); apply will refuse to remove it, since they would go with it",
                observed.snapshots.join(", ")
            ));
        }
    }
    change.with_observed(observed)
}
