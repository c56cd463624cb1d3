//! Where a Volume appears on the host: `/dev/VG/NAME`, the path VM disks and container
//! mounts open.
//!
//! Other drivers follow a reference to a Volume through the revision
//! ([`PlanContext::referenced`]) and ask [`volume_device`] for its path; the graph
//! orders the Volume's creation before theirs, so the path exists by the time they
//! apply. Both sides compute it here, from the declaration, so they cannot disagree.

use crate::drivers::volume::VolumeSpec;
use std::path::PathBuf;

use crate::contract::PlanContext;
use crate::model::{Kind, Name};

/// `/dev/VG/NAME`: the udev link lvm2 makes for an active logical volume.
pub fn device_path(vg: &str, name: &str) -> PathBuf {
    PathBuf::from("/dev").join(vg).join(name)
}

/// The path of the Volume `name` declared in this revision (`/dev/VG/NAME`, or a file
/// volume's `DIR/NAME.FORMAT`), or `None` when the
/// revision declares no such Volume (validation rejects a dangling reference first).
pub fn volume_device(context: &PlanContext, name: &Name) -> Option<PathBuf> {
    let resource = context.referenced(Kind::Volume, name)?;
    let volume = resource.spec.get::<VolumeSpec>()?;
    Some(volume.path(name.as_str()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::drivers::volume::VolumeSpec;
    use crate::model::Spec;
    use crate::model::{Metadata, Resource};

    #[test]
    fn another_driver_finds_a_declared_volumes_device() {
        let spec: VolumeSpec = serde_yaml::from_str("volumeGroup: vg0\nsize: 1GiB").unwrap();
        let name = Name::parse("vm1-root").unwrap();
        let volume = Arc::new(Resource::new(
            Metadata::named(name.clone()),
            Spec::new(spec),
        ));
        let context = PlanContext::default().with_revision(&[volume]);
        assert_eq!(
            volume_device(&context, &name),
            Some(PathBuf::from("/dev/vg0/vm1-root"))
        );
        assert_eq!(
            volume_device(&context, &Name::parse("other").unwrap()),
            None
        );
    }
}
