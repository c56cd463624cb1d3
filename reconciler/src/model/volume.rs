//! `kind: Volume`: an LVM logical volume.
//!
//! Volumes hold data, so the defaults protect it: `reclaimPolicy: Retain` (pruning forgets
//! the volume and leaves the data), growing is in place, shrinking is refused.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ByteSize;

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
    /// An image to write into the volume when it is created (any format `qemu-img` reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
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
