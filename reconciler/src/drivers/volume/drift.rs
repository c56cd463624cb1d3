//! How an existing volume of gitvisor's differs from its declaration, computed once:
//! the plan renders it as [`FieldChange`]s, apply turns it into exactly the requests
//! that close each difference, so both always agree.
//!
//! Only what changes in place is here: growing (and growing the filesystem gitvisor
//! made), the reclaim policy recorded in the tags, and the marker of an adopted volume.
//! What would recreate the volume (another volume group or thin pool, another
//! filesystem) is a replace, and a shrink is refused; `diff.rs` decides those.

use super::size::show_bytes;
use crate::contract::{Effect, FieldChange};
use crate::drivers::volume::{Filesystem, ReclaimPolicy};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Grow from the first size to the second (bytes, whole extents).
    pub grow: Option<(u64, u64)>,
    /// The filesystem to grow to the volume's size once it is extended (or that an
    /// interrupted grow left small).
    pub grow_filesystem: Option<Filesystem>,
    /// The recorded reclaim policy (`None`: not recorded) and the declared one.
    pub reclaim: Option<(Option<ReclaimPolicy>, ReclaimPolicy)>,
    /// The volume is adopted: the update puts gitvisor's marker on it.
    pub adopt: bool,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self == &Drift::default()
    }

    pub fn fields(&self) -> Vec<FieldChange> {
        let mut fields = Vec::new();
        if let Some((old, new)) = self.grow {
            fields.push(FieldChange::new(
                "size",
                show_bytes(old),
                show_bytes(new),
                Effect::Hot,
            ));
        }
        if let Some(filesystem) = self.grow_filesystem {
            let name = super::seam::fs_name(filesystem);
            fields.push(FieldChange::new(
                "filesystem",
                format!("{name}, smaller than the volume"),
                format!("{name}, grown to the volume's size"),
                Effect::Hot,
            ));
        }
        if let Some((old, new)) = self.reclaim {
            fields.push(FieldChange::new(
                "reclaimPolicy",
                old.map(|p| format!("{p:?}")),
                format!("{new:?}"),
                Effect::Hot,
            ));
        }
        fields
    }
}
