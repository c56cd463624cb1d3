//! `spec.nfs`: a file volume on an NfsMount's share.
//!
//! Such a volume is a `directory` volume whose directory is the share's mount path; the
//! path is not in the Volume's own document (the NfsMount may leave `spec.path` out and
//! be mounted under the state dir), so it is resolved where a driver plans, from the
//! revision ([`PlanContext::referenced`]) and the state dir. Everything after that
//! (the decision table, apply, a VM's disk) sees a plain `directory` volume, so a file
//! on a share and one in a local directory follow the very same rules. The graph
//! orders the Volume after its NfsMount (`spec.nfs` is a reference), so the share is
//! mounted before the volume is created and unmounted only after it is pruned.

use std::borrow::Cow;
use std::path::Path;

use crate::contract::PlanContext;
use crate::drivers::nfs_mount::NfsMountSpec;
use crate::drivers::volume::VolumeSpec;
use crate::model::Kind;

/// `spec`, with an `nfs` share turned into the `directory` it is mounted at; any other
/// spec unchanged. An error (for the plan to show) when the NfsMount is not declared.
pub fn on_share<'a>(
    spec: &'a VolumeSpec,
    context: &PlanContext,
    state_dir: &Path,
) -> Result<Cow<'a, VolumeSpec>, String> {
    let Some(mount) = &spec.nfs else {
        return Ok(Cow::Borrowed(spec));
    };
    let Some(mount_spec) = context
        .referenced(Kind::NfsMount, mount)
        .and_then(|resource| resource.spec.get::<NfsMountSpec>())
    else {
        return Err(format!(
            "spec.nfs names NfsMount/{mount}, which is not declared for this host; declare it, or fix spec.nfs"
        ));
    };
    let directory = mount_spec.mount_path(mount.as_str(), state_dir);
    Ok(Cow::Owned(VolumeSpec {
        directory: Some(directory.to_string_lossy().into_owned()),
        nfs: None,
        ..spec.clone()
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Metadata, Name, Resource, Spec};

    fn mount(name: &str, spec: &str) -> Arc<Resource> {
        let spec: NfsMountSpec = serde_yaml::from_str(spec).unwrap();
        Arc::new(Resource::new(
            Metadata::named(Name::parse(name).unwrap()),
            Spec::new(spec),
        ))
    }

    fn volume(spec: &str) -> VolumeSpec {
        serde_yaml::from_str(spec).unwrap()
    }

    #[test]
    fn a_share_volume_is_a_file_in_the_mount_path() {
        let context = PlanContext::default().with_revision(&[
            mount("media", "{server: nas, export: /srv/media}"),
            mount("vms", "{server: nas, export: /srv/vms, path: /mnt/vms}"),
        ]);
        let state = Path::new("/var/lib/gitvisor");
        let default_path = volume("{nfs: media, size: 1GiB}");
        let resolved = on_share(&default_path, &context, state).unwrap();
        assert_eq!(
            resolved.path("disk"),
            Path::new("/var/lib/gitvisor/nfs/media/disk.qcow2")
        );
        let declared_path = volume("{nfs: vms, format: raw, size: 1GiB}");
        let resolved = on_share(&declared_path, &context, Path::new("/elsewhere")).unwrap();
        assert_eq!(resolved.path("disk"), Path::new("/mnt/vms/disk.raw"));
        assert_eq!(
            resolved.disk_format(),
            crate::drivers::volume::FileFormat::Raw
        );
        let local = volume("{directory: /d, size: 1GiB}");
        assert!(matches!(
            on_share(&local, &context, state).unwrap(),
            Cow::Borrowed(_)
        ));
        let missing = volume("{nfs: gone, size: 1GiB}");
        let error = on_share(&missing, &context, state).unwrap_err();
        assert!(
            error.contains("NfsMount/gone") && error.contains("spec.nfs"),
            "{error}"
        );
    }

    #[test]
    fn a_share_volume_depends_on_its_mount() {
        let refs = crate::model::KindSpec::references(&volume(
            "{nfs: media, size: 1GiB, source: {cloneOf: Volume/base}}",
        ));
        let targets: Vec<String> = refs.iter().map(|r| r.target.to_string()).collect();
        assert_eq!(targets, ["NfsMount/media", "Volume/base"]);
        assert_eq!(refs[0].path, "spec.nfs");
    }
}
