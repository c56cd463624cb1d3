//! The host's volumes from one report, indexed, and the snapshot of one volume that a
//! change carries from plan to apply ([`ObservedVolume`]).

use std::collections::BTreeMap;

use super::drift::Drift;
use super::seam::{ImageInfo, LvState, LvmReport, VgState};
use super::tags;
use crate::contract::{Evidence, PlanContext};
use crate::model::{Kind, Name, ResourceId};

/// One `vgs` + `lvs` report, indexed by VG and by `VG/LV`.
#[derive(Debug)]
pub struct HostVolumes {
    vgs: BTreeMap<String, VgState>,
    lvs: BTreeMap<(String, String), LvState>,
}

impl HostVolumes {
    pub fn new(report: LvmReport) -> Self {
        HostVolumes {
            vgs: report
                .vgs
                .into_iter()
                .map(|vg| (vg.name.clone(), vg))
                .collect(),
            lvs: report
                .lvs
                .into_iter()
                .map(|lv| ((lv.vg.clone(), lv.name.clone()), lv))
                .collect(),
        }
    }

    pub fn vg(&self, name: &str) -> Option<&VgState> {
        self.vgs.get(name)
    }

    pub fn vg_names(&self) -> Vec<&str> {
        self.vgs.keys().map(String::as_str).collect()
    }

    pub fn lv(&self, vg: &str, name: &str) -> Option<&LvState> {
        self.lvs.get(&(vg.to_owned(), name.to_owned()))
    }

    pub fn lvs(&self) -> impl Iterator<Item = &LvState> {
        self.lvs.values()
    }

    /// The LVs of gitvisor's for Volume `name` (marker, id tag and store record) in a
    /// volume group other than `vg`: where it was before `volumeGroup` changed.
    pub fn ours_elsewhere(&self, name: &Name, vg: &str, context: &PlanContext) -> Option<&LvState> {
        let recorded = context.is_recorded(&ResourceId::new(Kind::Volume, name.clone()));
        self.lvs.values().find(|lv| {
            lv.vg != vg
                && lv.name == name.as_str()
                && Evidence::new(tags::marker(lv, name.as_str()), recorded).is_ours()
        })
    }

    /// The classic snapshots of `lv`, `VG/NAME` each.
    pub fn snapshots_of(&self, lv: &LvState) -> Vec<String> {
        self.lvs
            .values()
            .filter(|other| {
                other.vg == lv.vg
                    && other.kind == super::seam::LvKind::Snapshot
                    && other.origin.as_deref() == Some(lv.name.as_str())
            })
            .map(LvState::full_name)
            .collect()
    }

    /// Free extents per VG, for a plan to spend as it allocates.
    pub fn free_extents(&self) -> BTreeMap<String, u64> {
        self.vgs
            .values()
            .map(|vg| (vg.name.clone(), vg.free_extents))
            .collect()
    }
}

/// What apply needs about one volume, as the plan saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedVolume {
    /// The volume group the volume is (to be) in.
    pub vg: String,
    /// The declared size rounded up to whole extents (for deletes: the LV's size).
    pub size: u64,
    /// The LV under the volume's name in `vg`, when there is one.
    pub lv: Option<LvState>,
    /// What a replace removes first (the LV in its old VG, or an incomplete one).
    pub replaced: Option<LvState>,
    /// What the source image holds, for a volume written from one.
    pub image: Option<ImageInfo>,
    /// For a snapshot: the origin's LV name and whether it is thin (no size of its own).
    pub origin: Option<Origin>,
    /// How an existing volume differs from its declaration.
    pub drift: Drift,
    /// A pruned volume whose reclaim policy is Retain: forgotten, not removed.
    pub retain: bool,
    /// Classic snapshots of a pruned volume (removing it would delete them).
    pub snapshots: Vec<String>,
}

/// The origin of a snapshot volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub name: String,
    /// A thin origin gets a thin snapshot, as big as the origin.
    pub thin: bool,
    /// The origin's size (rounded), which a thin snapshot starts with.
    pub size: u64,
}

impl ObservedVolume {
    pub fn new(vg: &str, size: u64) -> Self {
        ObservedVolume {
            vg: vg.to_owned(),
            size,
            lv: None,
            replaced: None,
            image: None,
            origin: None,
            drift: Drift::default(),
            retain: false,
            snapshots: Vec::new(),
        }
    }
}
