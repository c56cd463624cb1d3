//! `kind: Volume`: an LVM logical volume, or a disk image file in a directory.
//!
//! Volumes hold data, so the defaults protect it: `reclaimPolicy: Retain` (pruning forgets
//! the volume and leaves the data), growing is in place, shrinking is refused.
//!
//! `source` is written once, when the volume is created: an image file (`source:
//! /path/disk.qcow2`, any format `qemu-img` reads), or another managed Volume to take an
//! LVM snapshot of (`source: {snapshotOf: Volume/db}`), or, for a qcow2 file volume, a
//! copy-on-write clone of another file Volume (`source: {cloneOf: Volume/base}`).
//!
//! Where a volume lives is exactly one of `volumeGroup` (an LV, `/dev/VG/NAME`),
//! `directory` (a file `DIR/NAME.qcow2` or `DIR/NAME.raw`, [`VolumeSpec::path`]) and
//! `nfs` (a file in an NfsMount's mount path: `share.rs` resolves it against the
//! revision into a `directory` first): every other driver opens the volume through that
//! one resolved path.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{ByteSize, Kind, KindSpec, Name, Reference, ResourceId};

/// The largest logical volume LVM makes (8 EiB on 64-bit hosts); a larger `size` is a
/// typo that `lvcreate` would refuse after the rest of the revision was applied.
pub const MAX_VOLUME_SIZE: u64 = 8 << 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    /// The LVM volume group to allocate from (or `directory`: exactly one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group: Option<String>,
    /// Keep the volume as a disk image file in this local directory (made when missing),
    /// `DIR/NAME.qcow2` or `DIR/NAME.raw`, instead of an LVM logical volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Keep the volume as a disk image file on this NfsMount's share (in its mount path),
    /// like `directory`; the Volume is created after the mount and pruned before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<Name>,
    /// The file's format, for a `directory` or `nfs` volume only: `qcow2` (the default: grows as
    /// it is written, can be cloned) or `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
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

/// The format of a file volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// QEMU's copy-on-write format: sparse, grows as written, can back clones.
    #[default]
    Qcow2,
    /// A plain sparse file, byte for byte the disk.
    Raw,
}

impl FileFormat {
    /// `qcow2` or `raw`, as qemu-img and file names say it.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Qcow2 => "qcow2",
            FileFormat::Raw => "raw",
        }
    }
}

/// Where a Volume lives on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing<'a> {
    /// An LVM logical volume in this volume group.
    Lvm { volume_group: &'a str },
    /// A disk image file of this format in this directory.
    File {
        directory: &'a str,
        format: FileFormat,
    },
}

impl VolumeSpec {
    /// Where the volume lives: a file when `directory` (or `nfs`) is declared, else an
    /// LV. An `nfs` volume's directory is its share's mount path, known only once
    /// resolved against the revision (`share::on_share`); unresolved, it is empty.
    pub fn backing(&self) -> Backing<'_> {
        match (&self.directory, &self.nfs) {
            (Some(directory), _) => Backing::File {
                directory,
                format: self.format.unwrap_or_default(),
            },
            (None, Some(_)) => Backing::File {
                directory: "",
                format: self.format.unwrap_or_default(),
            },
            (None, None) => Backing::Lvm {
                volume_group: self.volume_group.as_deref().unwrap_or_default(),
            },
        }
    }

    /// The volume group of an LVM volume (empty for a file volume: validation makes
    /// every Volume declare exactly one of the two).
    pub fn lvm_group(&self) -> &str {
        self.volume_group.as_deref().unwrap_or_default()
    }

    /// The one path every other driver opens: `/dev/VG/NAME`, or `DIR/NAME.FORMAT`.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        match self.backing() {
            Backing::Lvm { volume_group } => super::device::device_path(volume_group, name),
            Backing::File { directory, format } => {
                std::path::Path::new(directory).join(format!("{name}.{}", format.as_str()))
            }
        }
    }

    /// The disk format a VM opens the volume with: `raw` for an LV.
    pub fn disk_format(&self) -> FileFormat {
        match self.backing() {
            Backing::Lvm { .. } => FileFormat::Raw,
            Backing::File { format, .. } => format,
        }
    }
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
    /// A qcow2 overlay whose backing file is another (file) Volume.
    CloneOf(ResourceId),
    /// An image downloaded once into the state dir's cache (verified against `sha256`
    /// when given), then written like an image file.
    Url { url: String, sha256: Option<String> },
}

impl VolumeSource {
    /// The Volume this one is a snapshot of.
    pub fn snapshot_of(&self) -> Option<&ResourceId> {
        match self {
            VolumeSource::SnapshotOf(origin) => Some(origin),
            _ => None,
        }
    }

    /// The Volume this one is a copy-on-write clone of.
    pub fn clone_of(&self) -> Option<&ResourceId> {
        match self {
            VolumeSource::CloneOf(base) => Some(base),
            _ => None,
        }
    }

    /// The Volume this one starts from, and the field that names it.
    pub fn origin(&self) -> Option<(&ResourceId, &'static str)> {
        match self {
            VolumeSource::SnapshotOf(origin) => Some((origin, SNAPSHOT_OF)),
            VolumeSource::CloneOf(base) => Some((base, CLONE_OF)),
            VolumeSource::Image(_) | VolumeSource::Url { .. } => None,
        }
    }

    /// The image file to write.
    pub fn image(&self) -> Option<&str> {
        match self {
            VolumeSource::Image(path) => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for VolumeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeSource::Image(path) => f.write_str(path),
            VolumeSource::SnapshotOf(origin) => write!(f, "snapshot of {origin}"),
            VolumeSource::CloneOf(base) => write!(f, "clone of {base}"),
            VolumeSource::Url { url, .. } => f.write_str(url),
        }
    }
}

const SNAPSHOT_OF: &str = "snapshotOf";
const CLONE_OF: &str = "cloneOf";
const URL: &str = "url";
const SHA256: &str = "sha256";
const SOURCE_KEYS: &[&str] = &[SNAPSHOT_OF, CLONE_OF, URL, SHA256];

impl Serialize for VolumeSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            VolumeSource::Image(path) => serializer.serialize_str(path),
            VolumeSource::Url { url, sha256 } => {
                let mut map = serializer.serialize_map(Some(1 + usize::from(sha256.is_some())))?;
                map.serialize_entry(URL, url)?;
                if let Some(sha256) = sha256 {
                    map.serialize_entry(SHA256, sha256)?;
                }
                map.end()
            }
            VolumeSource::SnapshotOf(origin) | VolumeSource::CloneOf(origin) => {
                let key = self.origin().map_or(SNAPSHOT_OF, |(_, key)| key);
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(key, origin)?;
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
                f.write_str(
                    "an image path, or a mapping {snapshotOf: Volume/NAME}, {cloneOf: Volume/NAME} or {url: URL, sha256: DIGEST}",
                )
            }

            fn visit_str<E: de::Error>(self, path: &str) -> Result<VolumeSource, E> {
                if path.trim().is_empty() {
                    return Err(E::custom("the image path must not be empty"));
                }
                Ok(VolumeSource::Image(path.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VolumeSource, A::Error> {
                let mut origin: Option<VolumeSource> = None;
                let (mut url, mut sha256) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        URL if url.is_none() => url = Some(map.next_value::<String>()?),
                        SHA256 if sha256.is_none() => sha256 = Some(map.next_value::<String>()?),
                        URL | SHA256 => return Err(de::Error::duplicate_field(URL)),
                        SNAPSHOT_OF | CLONE_OF if origin.is_none() => {
                            let target = map.next_value::<ResourceId>()?;
                            origin = Some(if key == CLONE_OF {
                                VolumeSource::CloneOf(target)
                            } else {
                                VolumeSource::SnapshotOf(target)
                            });
                        }
                        SNAPSHOT_OF | CLONE_OF => {
                            return Err(de::Error::custom(
                                "a source is one of snapshotOf, cloneOf and url, once",
                            ));
                        }
                        _ => return Err(de::Error::unknown_field(&key, SOURCE_KEYS)),
                    }
                }
                match (origin, url, sha256) {
                    (Some(origin), None, None) => Ok(origin),
                    (None, Some(url), sha256) => Ok(VolumeSource::Url { url, sha256 }),
                    (None, None, Some(_)) => Err(de::Error::missing_field(URL)),
                    (None, None, None) => Err(de::Error::missing_field(SNAPSHOT_OF)),
                    (Some(_), _, _) => Err(de::Error::custom(
                        "a source is one of snapshotOf, cloneOf and url, once",
                    )),
                }
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
            "description": "An image file to write into the new volume (any format qemu-img reads), {snapshotOf: Volume/NAME}: an LVM snapshot of another managed Volume, or {cloneOf: Volume/NAME}: a qcow2 overlay backed by another file Volume, or {url: https://…, sha256: HEX}: an image downloaded once into the state dir's cache, verified, then written.",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": [SNAPSHOT_OF],
                    "properties": {SNAPSHOT_OF: reference}
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": [CLONE_OF],
                    "properties": {CLONE_OF: reference}
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": [URL],
                    "properties": {
                        URL: {"type": "string", "pattern": "^https?://"},
                        SHA256: {"type": "string", "pattern": "^[0-9a-f]{64}$"}
                    }
                }
            ]
        })
    }
}

/// A snapshot or a clone refers to the volume it starts from; a volume on a share, to
/// its NfsMount (mounted first, unmounted after).
impl KindSpec for VolumeSpec {
    const KIND: Kind = Kind::Volume;

    fn references(&self) -> Vec<Reference> {
        let share = self.nfs.as_ref().map(|mount| Reference {
            target: ResourceId::new(Kind::NfsMount, mount.clone()),
            path: "spec.nfs".into(),
        });
        share
            .into_iter()
            .chain(
                self.source
                    .as_ref()
                    .and_then(|s| s.origin())
                    .map(|(origin, key)| Reference {
                        target: origin.clone(),
                        path: format!("spec.source.{key}"),
                    }),
            )
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
        let clone: VolumeSource = serde_yaml::from_str("cloneOf: Volume/base").unwrap();
        assert_eq!(
            clone.clone_of().map(ToString::to_string).as_deref(),
            Some("Volume/base")
        );
        assert_eq!(
            serde_yaml::to_string(&clone).unwrap(),
            "cloneOf: Volume/base\n"
        );
        let url: VolumeSource =
            serde_yaml::from_str("{url: \"https://x/a.qcow2\", sha256: abc}").unwrap();
        assert_eq!(
            url,
            VolumeSource::Url {
                url: "https://x/a.qcow2".into(),
                sha256: Some("abc".into())
            }
        );
        assert!(serde_yaml::from_str::<VolumeSource>("sha256: abc").is_err());
        assert!(serde_yaml::from_str::<VolumeSource>("{url: u, cloneOf: Volume/a}").is_err());
        let unknown = serde_yaml::from_str::<VolumeSource>("copyOf: Volume/db").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `copyOf`"),
            "{unknown}"
        );
        assert!(serde_yaml::from_str::<VolumeSource>("{}").is_err());
        assert!(serde_yaml::from_str::<VolumeSource>("\"\"").is_err());
    }
}
