//! A Volume's validation, reached through its registration: a Volume becomes an LVM
//! logical volume, so its names follow LVM's rules (and avoid the names LVM reserves),
//! its size is one LVM can make, and a source is written once into an empty volume.

use super::{MAX_VOLUME_SIZE, VolumeSpec};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::quoted;

/// The rules of one Volume on its own; every finding goes to `diagnostics`.
pub(crate) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let resource = &item.resource;
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    let Some(volume) = resource.spec.get::<VolumeSpec>() else {
        return;
    };
    for (field, value) in [
        ("spec.volumeGroup", Some(&volume.volume_group)),
        ("spec.thinPool", volume.thin_pool.as_ref()),
    ] {
        if let Some(value) = value
            && let Err(message) = check_lvm_name(value)
        {
            error(field, message);
        }
    }
    if volume.size.bytes() == 0 {
        error("spec.size", "size must be greater than zero".into());
    }
    if volume.size.bytes() >= MAX_VOLUME_SIZE {
        error(
            "spec.size",
            format!(
                "{} is more than LVM can make (a logical volume is smaller than 8 EiB)",
                volume.size
            ),
        );
    }
    check_volume_source(resource, volume, &mut error);
    let name = resource.metadata.name.as_str();
    if let Some(prefix) = ["snapshot", "pvmove"]
        .into_iter()
        .find(|prefix| name.starts_with(prefix))
    {
        error(
            "metadata.name",
            format!(
                "a Volume's name is its logical volume's name, and LVM reserves names starting with {prefix:?}"
            ),
        );
    }
    if let Err(message) = check_lvm_name(name) {
        error("metadata.name", message);
    }
}

/// A source is written once into an empty volume: no filesystem is made over it, and a
/// snapshot lives where its origin does (another Volume, in that one's pool).
fn check_volume_source(
    resource: &crate::model::Resource,
    volume: &VolumeSpec,
    error: &mut impl FnMut(&str, String),
) {
    let Some(source) = &volume.source else {
        return;
    };
    if volume.filesystem.is_some() {
        error(
            "spec.filesystem",
            format!(
                "a volume with a source starts with the source's contents ({source}); making a filesystem would overwrite them: remove `filesystem` or `source`"
            ),
        );
    }
    if let Some(origin) = source.snapshot_of() {
        if origin.kind != crate::model::Kind::Volume {
            error(
                "spec.source.snapshotOf",
                format!("a snapshot is taken of a Volume, not of {origin}"),
            );
        } else if origin.name == resource.metadata.name {
            error(
                "spec.source.snapshotOf",
                "a volume cannot be a snapshot of itself".into(),
            );
        }
        if volume.thin_pool.is_some() {
            error(
                "spec.thinPool",
                "a snapshot lives where its origin does (a thin snapshot in the origin's pool): remove `thinPool`".into(),
            );
        }
    }
}

/// LVM's own rule for VG and LV names, checked before a name can reach a command line.
fn check_lvm_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid LVM name {}: use letters, digits and + _ . -, not starting with -",
            quoted(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_names() {
        assert!(check_lvm_name("vg0").is_ok());
        assert!(check_lvm_name("-vg").is_err());
        assert!(check_lvm_name("vg;rm").is_err());
    }
}
