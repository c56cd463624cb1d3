//! `kind: Volume`: an LVM logical volume.
//!
//! Volumes hold data, so the defaults protect it: `reclaimPolicy: Retain` (pruning forgets
//! the volume and leaves the data), growing is in place, shrinking is refused.
//!
//! `source` is written once, when the volume is created: an image file (`source:
//! /path/disk.qcow2`, any format `qemu-img` reads), or another managed Volume to take an
//! LVM snapshot of (`source: {snapshotOf: Volume/db}`).

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{ByteSize, Kind, KindSpec, Reference, ResourceId};

/// The largest logical volume LVM makes (8 EiB on 64-bit hosts); a larger `size` is a
/// typo that `lvcreate` would refuse after the rest of the revision was applied.
pub const MAX_VOLUME_SIZE: u64 = 8 << 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    /// The LVM volume group to allocate from.
    pub volume_group: String,
    /// Size of the logical volume, e.g. `20GiB`.
    pub size: ByteSize,
    /// Allocate thinly from this thin pool in the volume group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_pool: Option<String>,
    /// Make this filesystem when the volume is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
    /// What the volume starts with, written once at creation: an image file (any format
    /// `qemu-img` reads), or `{snapshotOf: Volume/NAME}` for an LVM snapshot of another
    /// managed Volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
    /// What happens to the data when the manifest is removed.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
    Xfs,
    Btrfs,
    Swap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ReclaimPolicy {
    /// Pruning forgets the volume; the data stays.
    #[default]
    Retain,
    /// Pruning removes the logical volume.
    Delete,
}

/// What a new volume starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// An image file written into the volume with `qemu-img convert`.
    Image(String),
    /// An LVM snapshot of another managed Volume (a thin snapshot when that one is thin).
    SnapshotOf(ResourceId),
}

impl VolumeSource {
    /// The Volume this one is a snapshot of.
    pub fn snapshot_of(&self) -> Option<&ResourceId> {
        match self {
            VolumeSource::SnapshotOf(origin) => Some(origin),
            VolumeSource::Image(_) => None,
        }
    }

    /// The image file to write.
    pub fn image(&self) -> Option<&str> {
        match self {
            VolumeSource::Image(path) => Some(path),
            VolumeSource::SnapshotOf(_) => None,
        }
    }
}

impl fmt::Display for VolumeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeSource::Image(path) => f.write_str(path),
            VolumeSource::SnapshotOf(origin) => write!(f, "snapshot of {origin}"),
        }
    }
}

const SNAPSHOT_OF: &str = "snapshotOf";

impl Serialize for VolumeSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            VolumeSource::Image(path) => serializer.serialize_str(path),
            VolumeSource::SnapshotOf(origin) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(SNAPSHOT_OF, origin)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for VolumeSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;

        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = VolumeSource;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image path, or a mapping {snapshotOf: Volume/NAME}")
            }

            fn visit_str<E: de::Error>(self, path: &str) -> Result<VolumeSource, E> {
                if path.trim().is_empty() {
                    return Err(E::custom("the image path must not be empty"));
                }
                Ok(VolumeSource::Image(path.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VolumeSource, A::Error> {
                let mut origin = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != SNAPSHOT_OF {
                        return Err(de::Error::unknown_field(&key, &[SNAPSHOT_OF]));
                    }
                    if origin.is_some() {
                        return Err(de::Error::duplicate_field(SNAPSHOT_OF));
                    }
                    origin = Some(map.next_value::<ResourceId>()?);
                }
                origin
                    .map(VolumeSource::SnapshotOf)
                    .ok_or_else(|| de::Error::missing_field(SNAPSHOT_OF))
            }
        }

        deserializer.deserialize_any(SourceVisitor)
    }
}

impl JsonSchema for VolumeSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VolumeSource".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let reference = generator.subschema_for::<ResourceId>();
        schemars::json_schema!({
            "description": "An image file to write into the new volume (any format qemu-img reads), or {snapshotOf: Volume/NAME}: an LVM snapshot of another managed Volume.",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": [SNAPSHOT_OF],
                    "properties": {SNAPSHOT_OF: reference}
                }
            ]
        })
    }
}

/// A snapshot refers to the volume it copies.
impl KindSpec for VolumeSpec {
    const KIND: Kind = Kind::Volume;

    fn references(&self) -> Vec<Reference> {
        self.source
            .as_ref()
            .and_then(|s| s.snapshot_of())
            .map(|origin| Reference {
                target: origin.clone(),
                path: "spec.source.snapshotOf".into(),
            })
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_image_path_or_a_snapshot_of_a_volume() {
        let image: VolumeSource = serde_yaml::from_str("/images/a.qcow2").unwrap();
        assert_eq!(image, VolumeSource::Image("/images/a.qcow2".into()));
        let snapshot: VolumeSource = serde_yaml::from_str("snapshotOf: Volume/db").unwrap();
        assert_eq!(
            snapshot.snapshot_of().map(ToString::to_string).as_deref(),
            Some("Volume/db")
        );
        assert_eq!(
            serde_yaml::to_string(&snapshot).unwrap(),
            "snapshotOf: Volume/db\n"
        );
        let unknown = serde_yaml::from_str::<VolumeSource>("cloneOf: Volume/db").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `cloneOf`"),
            "{unknown}"
        );
        assert!(serde_yaml::from_str::<VolumeSource>("{}").is_err());
        assert!(serde_yaml::from_str::<VolumeSource>("\"\"").is_err());
    }
}
