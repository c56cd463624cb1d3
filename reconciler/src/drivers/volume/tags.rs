//! The LV tags gitvisor keeps on the volumes it creates: its ownership marker and what
//! it must remember about a volume that the volume group cannot tell otherwise.
//!
//! All of them go on in the same `lvcreate` that makes the LV (`--addtag`), so no
//! unmarked LV of gitvisor's ever exists:
//!
//! | tag                          | meaning                                                     |
//! |------------------------------|-------------------------------------------------------------|
//! | `gitvisor:managed`           | the marker                                                  |
//! | `gitvisor:id=Volume/NAME`    | which Volume it is (an LV renamed by hand no longer matches) |
//! | `gitvisor:reclaim=Retain`    | what pruning does (the declaration is gone by then)         |
//! | `gitvisor:fs=ext4`, `…=none` | the filesystem gitvisor made, so growing grows it too       |
//! | `gitvisor:incomplete`        | the volume is being written (image, filesystem): not ready  |
//! | `gitvisor:grow-fs`           | the LV was extended and its filesystem not grown yet        |
//!
//! `incomplete` comes off in the last request of a creation, so a crash or a failed
//! copy never leaves a half-written volume that looks ready: the next plan replaces it.

use crate::contract::Marker;
use crate::drivers::volume::{Filesystem, ReclaimPolicy};

use super::seam::{LvState, fs_name};

pub const MANAGED: &str = "gitvisor:managed";
pub const INCOMPLETE: &str = "gitvisor:incomplete";
pub const GROW_FS: &str = "gitvisor:grow-fs";
/// What every tag of gitvisor's starts with.
pub const PREFIX: &str = "gitvisor:";
const ID_PREFIX: &str = "gitvisor:id=Volume/";
const RECLAIM_PREFIX: &str = "gitvisor:reclaim=";
const FS_PREFIX: &str = "gitvisor:fs=";

pub fn id(name: &str) -> String {
    format!("{ID_PREFIX}{name}")
}

pub fn reclaim(policy: ReclaimPolicy) -> String {
    let word = match policy {
        ReclaimPolicy::Retain => "Retain",
        ReclaimPolicy::Delete => "Delete",
    };
    format!("{RECLAIM_PREFIX}{word}")
}

pub fn filesystem(filesystem: Option<Filesystem>) -> String {
    format!("{FS_PREFIX}{}", filesystem.map_or("none", fs_name))
}

/// Where the LV stands with respect to the Volume `name`: ours when it carries the
/// marker and `name`'s id; foreign when it carries other gitvisor tags (another
/// Volume's, renamed by hand); absent otherwise.
pub fn marker(lv: &LvState, name: &str) -> Marker {
    if lv.has_tag(MANAGED) && lv.has_tag(&id(name)) {
        return Marker::Ours;
    }
    let ours: Vec<&str> = gitvisor_tags(lv).collect();
    if ours.is_empty() {
        Marker::Absent
    } else {
        Marker::Foreign(ours.join(","))
    }
}

/// The Volume the LV's tags say it is, when it carries the marker.
pub fn owner(lv: &LvState) -> Option<&str> {
    if !lv.has_tag(MANAGED) {
        return None;
    }
    lv.tags.iter().find_map(|tag| tag.strip_prefix(ID_PREFIX))
}

/// The reclaim policy recorded on the LV (`None`: not recorded).
pub fn reclaim_of(lv: &LvState) -> Option<ReclaimPolicy> {
    lv.tags
        .iter()
        .find_map(|tag| match tag.strip_prefix(RECLAIM_PREFIX)? {
            "Retain" => Some(ReclaimPolicy::Retain),
            "Delete" => Some(ReclaimPolicy::Delete),
            _ => None,
        })
}

/// The filesystem gitvisor made on the LV: `None` when no tag says (an adopted LV),
/// `Some(None)` when it made none.
pub fn filesystem_of(lv: &LvState) -> Option<Option<Filesystem>> {
    lv.tags.iter().find_map(|tag| {
        Some(match tag.strip_prefix(FS_PREFIX)? {
            "none" => None,
            "ext4" => Some(Filesystem::Ext4),
            "xfs" => Some(Filesystem::Xfs),
            "btrfs" => Some(Filesystem::Btrfs),
            "swap" => Some(Filesystem::Swap),
            _ => return None,
        })
    })
}

/// Every tag of gitvisor's on the LV.
pub fn gitvisor_tags(lv: &LvState) -> impl Iterator<Item = &str> {
    lv.tags
        .iter()
        .map(String::as_str)
        .filter(|tag| tag.starts_with(PREFIX))
}

/// The tags a new volume is created with.
pub fn creation(
    name: &str,
    policy: ReclaimPolicy,
    filesystem: Option<Filesystem>,
    incomplete: bool,
) -> Vec<String> {
    let mut tags = vec![
        MANAGED.to_owned(),
        id(name),
        reclaim(policy),
        self::filesystem(filesystem),
    ];
    if incomplete {
        tags.push(INCOMPLETE.to_owned());
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::volume::fake::lv;

    #[test]
    fn the_marker_needs_the_volumes_own_id() {
        let tags = creation("data", ReclaimPolicy::Retain, Some(Filesystem::Ext4), false);
        let ours = lv("vg0", "data", 1 << 30, &tags);
        assert_eq!(marker(&ours, "data"), Marker::Ours);
        assert_eq!(owner(&ours), Some("data"));
        assert_eq!(reclaim_of(&ours), Some(ReclaimPolicy::Retain));
        assert_eq!(filesystem_of(&ours), Some(Some(Filesystem::Ext4)));
        // Renamed by hand: the tags name another Volume.
        assert!(matches!(marker(&ours, "data2"), Marker::Foreign(_)));
        let bare = lv("vg0", "data", 1 << 30, &["backup".to_owned()]);
        assert_eq!(marker(&bare, "data"), Marker::Absent);
        assert_eq!(filesystem_of(&bare), None);
        assert_eq!(owner(&bare), None);
    }
}
