//! Errors of the volume driver, each naming the volume and what was being done; the
//! tool's answer is the `#[source]`, so the chain reads `volume data: extend vg0/data to
//! 2GiB: lvextend failed (exit status: 5): Insufficient free space …`. Every variant is
//! classified ([`Classify`]) for the controller's error policy.

use super::seam::LvmError;
use crate::contract::{Classify, FailureClass, Interrupted};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// lvm2 is not installed, and Volumes are declared or recorded.
    #[error(
        "cannot manage Volumes on this host: lvm2 is not installed (install it: apt install lvm2, dnf install lvm2), or remove the Volumes from the revision"
    )]
    Lvm2Missing {
        #[source]
        cause: LvmError,
    },

    /// The one batch read of VGs and LVs failed.
    #[error("reading the file volumes in their directories")]
    ObserveFiles {
        #[source]
        cause: LvmError,
    },
    #[error(
        "file volumes (spec.directory) are not available to this volume driver; this is a bug in gitvisor"
    )]
    NoFileVolumes,
    #[error("volume {volume}: getting its source image")]
    Download {
        volume: String,
        #[source]
        cause: Box<super::download::DownloadError>,
    },
    #[error(
        "volume {volume}: the image from {url} holds a {image}-byte disk, larger than the volume ({size} bytes); declare a larger size"
    )]
    ImageTooLarge {
        volume: String,
        url: String,
        image: u64,
        size: u64,
    },
    #[error(
        "images from a URL have no cache directory in this volume driver; this is a bug in gitvisor"
    )]
    NoImageCache,
    #[error("reading volume groups and logical volumes (vgs, lvs)")]
    Observe {
        #[source]
        cause: LvmError,
    },

    /// A tool refused a request.
    #[error("volume {volume}: {operation}")]
    Request {
        volume: String,
        operation: String,
        #[source]
        cause: LvmError,
    },

    /// The LV to remove is open; gitvisor does not force it.
    #[error(
        "volume {volume}: {device} is open (mounted, or used by a guest or a process), so it is not removed; stop what uses it, then apply again"
    )]
    InUse { volume: String, device: String },

    /// The LV to remove is the origin of classic snapshots, which `lvremove` would take
    /// with it.
    #[error(
        "volume {volume}: logical volume {lv} has snapshots ({snapshots}) that removing it would delete too; remove them first"
    )]
    HasSnapshots {
        volume: String,
        lv: String,
        snapshots: String,
    },

    /// The step was cancelled or ran out of time before `operation`; what was done stays,
    /// and the next plan carries on from it (an incomplete volume is made again).
    #[error("volume {volume}: stopped before {operation}")]
    Interrupted {
        volume: String,
        operation: String,
        #[source]
        cause: Interrupted,
    },

    /// The change handed to apply is not one this driver planned.
    #[error("volume {volume}: cannot apply this change: {reason}; this is a bug in gitvisor")]
    InvalidChange { volume: String, reason: String },
}

impl Classify for VolumeError {
    fn class(&self) -> FailureClass {
        match self {
            VolumeError::Lvm2Missing { .. }
            | VolumeError::InUse { .. }
            | VolumeError::HasSnapshots { .. } => FailureClass::NeedsUser,
            VolumeError::Observe { cause }
            | VolumeError::ObserveFiles { cause }
            | VolumeError::Request { cause, .. } => cause.class(),
            VolumeError::Interrupted { cause, .. } => cause.class(),
            VolumeError::InvalidChange { .. }
            | VolumeError::NoFileVolumes
            | VolumeError::NoImageCache => FailureClass::Bug,
            VolumeError::ImageTooLarge { .. } => FailureClass::NeedsUser,
            VolumeError::Download { cause, .. } if cause.transient() => FailureClass::Transient,
            VolumeError::Download { .. } => FailureClass::NeedsUser,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lvm(stderr: &str) -> LvmError {
        LvmError::Failed {
            program: "lvremove".into(),
            status: "exit status: 5".into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn every_variant_is_classified_and_the_tool_answers_in_the_source() {
        let busy = VolumeError::Request {
            volume: "data".into(),
            operation: "remove logical volume vg0/data".into(),
            cause: lvm("Logical volume vg0/data in use."),
        };
        assert_eq!(busy.class(), FailureClass::Transient);
        assert_eq!(
            crate::contract::chain(&busy),
            "volume data: remove logical volume vg0/data: lvremove failed (exit status: 5): Logical volume vg0/data in use."
        );
        let space = VolumeError::Request {
            volume: "data".into(),
            operation: "create".into(),
            cause: lvm("Volume group \"vg0\" has insufficient free space (3 extents): 5 required."),
        };
        assert_eq!(space.class(), FailureClass::NeedsUser);
        let missing = VolumeError::Lvm2Missing {
            cause: LvmError::NotInstalled {
                program: "lvs".into(),
            },
        };
        assert_eq!(missing.class(), FailureClass::NeedsUser);
        assert!(crate::contract::chain(&missing).ends_with("lvs is not installed on this host"));
        let in_use = VolumeError::InUse {
            volume: "data".into(),
            device: "/dev/vg0/data".into(),
        };
        assert_eq!(in_use.class(), FailureClass::NeedsUser);
        let stopped = VolumeError::Interrupted {
            volume: "data".into(),
            operation: "write image".into(),
            cause: Interrupted::Cancelled,
        };
        assert_eq!(stopped.class(), FailureClass::Transient);
        let bug = VolumeError::InvalidChange {
            volume: "data".into(),
            reason: "no snapshot".into(),
        };
        assert_eq!(bug.class(), FailureClass::Bug);
    }
}
