//! A Volume's validation, reached through its registration: a Volume becomes an LVM
//! logical volume, so its names follow LVM's rules (and avoid the names LVM reserves),
//! its size is one LVM can make, and a source is written once into an empty volume. A
//! Volume lives in exactly one place: `volumeGroup` (an LV), `directory` or `nfs` (a file
//! of `format` in a directory or on a share), and the fields of the other backing are
//! refused with the reason.

use super::spec::FileFormat;
use super::{MAX_VOLUME_SIZE, VolumeSource, VolumeSpec};
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
    check_backing(volume, &mut error);
    for (field, value) in [
        ("spec.volumeGroup", volume.volume_group.as_ref()),
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

/// Exactly one of `volumeGroup`, `directory` and `nfs`; what only one backing has is
/// refused on the other (a volume on a share is a file volume).
fn check_backing(volume: &VolumeSpec, error: &mut impl FnMut(&str, String)) {
    let declared: Vec<&str> = [
        ("volumeGroup", volume.volume_group.is_some()),
        ("directory", volume.directory.is_some()),
        ("nfs", volume.nfs.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if declared.len() > 1 {
        error(
            &format!("spec.{}", declared[1]),
            format!(
                "declare exactly one of volumeGroup (an LVM logical volume), directory (a file in a local directory) and nfs (a file on an NfsMount's share), not {}",
                declared.join(" and ")
            ),
        );
    }
    if volume.directory.is_none() && volume.nfs.is_none() {
        if volume.volume_group.is_none() {
            error(
                "spec.volumeGroup",
                "a Volume needs a place: volumeGroup (an LVM logical volume), directory (a disk image file in that directory) or nfs (a disk image file on that NfsMount's share)".into(),
            );
        }
        if volume.format.is_some() {
            error(
                "spec.format",
                "format is for a file volume (spec.directory or spec.nfs); an LVM volume is a raw device: remove `format`".into(),
            );
        }
        if let Some(VolumeSource::CloneOf(_)) = &volume.source {
            error(
                "spec.source.cloneOf",
                "cloneOf makes a qcow2 overlay, for a file volume (spec.directory or spec.nfs, format: qcow2); an LVM volume uses snapshotOf".into(),
            );
        }
        return;
    }
    if let Some(directory) = &volume.directory
        && let Some(problem) = directory_problem(directory)
    {
        error("spec.directory", problem);
    }
    if volume.thin_pool.is_some() {
        error(
            "spec.thinPool",
            "thinPool is for an LVM volume; a file volume is sparse already: remove `thinPool`"
                .into(),
        );
    }
    if volume.filesystem.is_some() {
        error(
            "spec.filesystem",
            "a file volume is a disk image for a VM, and gitvisor makes no filesystem in it: remove `filesystem` (containers mount an LVM Volume or a hostPath)".into(),
        );
    }
    match &volume.source {
        Some(VolumeSource::SnapshotOf(_)) => error(
            "spec.source.snapshotOf",
            "snapshotOf is an LVM snapshot; a file volume starts from another with cloneOf (format: qcow2)".into(),
        ),
        Some(VolumeSource::CloneOf(_)) if volume.format.unwrap_or_default() != FileFormat::Qcow2 => {
            error(
                "spec.format",
                "a clone is a qcow2 overlay over its base: declare format: qcow2 (the default)".into(),
            )
        }
        _ => {}
    }
}

/// A directory that reaches file names and QEMU's command line: absolute, without `..`
/// or control characters.
fn directory_problem(directory: &str) -> Option<String> {
    let path = std::path::Path::new(directory);
    if !path.is_absolute() {
        return Some(format!(
            "directory {} must be an absolute path",
            quoted(directory)
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Some(format!(
            "directory {} must not contain `..`",
            quoted(directory)
        ));
    }
    if directory.chars().any(char::is_control) {
        return Some("directory must not contain control characters".into());
    }
    None
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
    if let Some((origin, key)) = source.origin() {
        let field = format!("spec.source.{key}");
        if origin.kind != crate::model::Kind::Volume {
            error(
                &field,
                format!("a volume starts from another Volume, not from {origin}"),
            );
        } else if origin.name == resource.metadata.name {
            error(&field, "a volume cannot start from itself".into());
        }
    }
    if let VolumeSource::Url { url, sha256 } = source {
        let digest_ok = sha256.as_deref().is_none_or(|digest| {
            digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !digest_ok {
            error(
                "spec.source.sha256",
                "sha256 is the image's SHA-256 digest: 64 lowercase hexadecimal digits (as `sha256sum` prints it)".into(),
            );
        }
        if url.starts_with("http://") {
            if sha256.is_none() {
                error(
                    "spec.source.url",
                    format!(
                        "{} is plain HTTP: declare the image's sha256 (the digest is what makes the bytes trustworthy), or use https://",
                        quoted(url)
                    ),
                );
            }
        } else if !url.starts_with("https://") || url.len() <= "https://".len() {
            error(
                "spec.source.url",
                format!(
                    "{} is not an https:// (or, with sha256, http://) URL",
                    quoted(url)
                ),
            );
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            error(
                "spec.source.url",
                "a URL has no spaces or control characters; percent-encode them".into(),
            );
        }
    }
    if source.snapshot_of().is_some() && volume.thin_pool.is_some() {
        error(
            "spec.thinPool",
            "a snapshot lives where its origin does (a thin snapshot in the origin's pool): remove `thinPool`".into(),
        );
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
