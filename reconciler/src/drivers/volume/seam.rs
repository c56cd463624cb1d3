//! The host seam of the volume driver: what it reads from LVM and the requests it sends,
//! as plain values.
//!
//! The driver never runs a tool itself. It asks an [`LvmSeam`] for one report of every
//! volume group and logical volume on the host ([`LvmSeam::report`]: one `vgs` and one
//! `lvs`), for what an image file holds when a volume is to be written from one
//! ([`LvmSeam::inspect_image`], only for volumes about to be created), and sends
//! [`LvmRequest`]s one at a time ([`LvmSeam::send`]). The real implementation is
//! [`LvmTools`](super::lvm::LvmTools), which runs the lvm2 tools, `mkfs.*`, `fsadm` and
//! `qemu-img` with arguments as a vector, never through a shell; unit tests use the
//! recording [`FakeLvm`](super::fake::FakeLvm).
//!
//! Every name in a request was validated before it got here (`names.rs`), and sizes are
//! whole extents: the driver rounds them, so LVM never rounds behind its back.
//!
//! Errors carry the tool's answer only ([`LvmError`]); the driver wraps them with the
//! volume and the operation ([`VolumeError`](super::VolumeError)).

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use super::size::show_bytes;
use crate::contract::FailureClass;
use crate::drivers::volume::Filesystem;

/// One volume group as `vgs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgState {
    pub name: String,
    pub size: u64,
    pub free: u64,
    /// Every allocation is a whole number of extents of this size.
    pub extent_size: u64,
    pub free_extents: u64,
}

/// What kind of logical volume an LV is, from `segtype` and `lv_attr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LvKind {
    /// A plain (linear, striped, raid, …) volume allocated from the VG's extents.
    Plain,
    /// A thin volume in the pool `pool`.
    Thin { pool: String },
    /// A thin pool (`segtype` `thin-pool`): holds thin volumes, never a Volume itself.
    ThinPool,
    /// A classic copy-on-write snapshot of `origin`.
    Snapshot,
    /// Anything else lvm2 can make (cache, vdo, mirror logs, …), as `segtype` names it.
    Other(String),
}

/// One logical volume as `lvs` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LvState {
    pub vg: String,
    pub name: String,
    pub size: u64,
    pub tags: Vec<String>,
    pub kind: LvKind,
    /// The LV this one is a snapshot of (thin or classic), when it is one.
    pub origin: Option<String>,
    /// Classic snapshots exist of this LV: removing it would remove them with it.
    pub has_classic_snapshots: bool,
    /// Its device is open (mounted, used by a guest or a process).
    pub open: bool,
    /// Of a thin pool: how full its data and metadata are, in percent.
    pub data_percent: Option<f64>,
    pub metadata_percent: Option<f64>,
}

impl LvState {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// `VG/LV`, how lvm2 names it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.vg, self.name)
    }

    pub fn device_path(&self) -> PathBuf {
        super::device::device_path(&self.vg, &self.name)
    }

    pub fn pool(&self) -> Option<&str> {
        match &self.kind {
            LvKind::Thin { pool } => Some(pool),
            _ => None,
        }
    }
}

/// Every volume group and logical volume on the host, from one `vgs` and one `lvs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LvmReport {
    pub vgs: Vec<VgState>,
    /// Visible LVs only: the hidden parts of pools and mirrors (`[pool_tdata]`) are left out.
    pub lvs: Vec<LvState>,
    /// Why the kernel cannot make logical volumes (it has no device-mapper), read with
    /// the report; `None` when it can. lvm2 still lists VGs on such a kernel, so only
    /// this says that creating or resizing would fail.
    pub no_device_mapper: Option<String>,
}

/// What an image file holds, from `qemu-img info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `raw`, `qcow2`, … passed to `qemu-img convert -f` so the format is never guessed
    /// twice.
    pub format: String,
    /// The size of the disk the image describes.
    pub virtual_size: u64,
}

/// One change to the host's volumes. LVs are named by VG and name; sizes are in bytes,
/// whole extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LvmRequest {
    /// `lvcreate`: a plain LV of `size` in `vg`, or a thin one in `thin_pool`, carrying
    /// `tags` from the moment it exists.
    Create {
        vg: String,
        name: String,
        size: u64,
        thin_pool: Option<String>,
        tags: Vec<String>,
    },
    /// `lvcreate --snapshot`: a snapshot of `origin`; `size` is the copy-on-write space
    /// of a classic snapshot, `None` for a thin snapshot. Active and carrying `tags`.
    Snapshot {
        vg: String,
        origin: String,
        name: String,
        size: Option<u64>,
        tags: Vec<String>,
    },
    /// `lvchange --addtag … --deltag …`: one metadata update.
    ChangeTags {
        vg: String,
        name: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// `lvextend` to `size` (never smaller).
    Extend { vg: String, name: String, size: u64 },
    /// `lvremove` of this LV only; lvm2 refuses it while the device is open.
    Remove { vg: String, name: String },
    /// `mkfs.<filesystem>` on the device.
    MakeFilesystem {
        device: PathBuf,
        filesystem: Filesystem,
    },
    /// Grow the filesystem on the device to the device's size (`fsadm resize`).
    GrowFilesystem {
        device: PathBuf,
        filesystem: Filesystem,
    },
    /// `qemu-img convert` of `image` (of `format`) onto the device.
    WriteImage {
        image: PathBuf,
        format: String,
        device: PathBuf,
    },
}

impl fmt::Display for LvmRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LvmRequest::Create {
                vg,
                name,
                size,
                thin_pool,
                ..
            } => match thin_pool {
                Some(pool) => write!(
                    f,
                    "create thin volume {vg}/{name} of {} in pool {pool}",
                    show_bytes(*size)
                ),
                None => write!(
                    f,
                    "create logical volume {vg}/{name} of {}",
                    show_bytes(*size)
                ),
            },
            LvmRequest::Snapshot {
                vg,
                origin,
                name,
                size,
                ..
            } => match size {
                Some(size) => write!(
                    f,
                    "create snapshot {vg}/{name} of {vg}/{origin} with {} for changes",
                    show_bytes(*size)
                ),
                None => write!(f, "create thin snapshot {vg}/{name} of {vg}/{origin}"),
            },
            LvmRequest::ChangeTags {
                vg,
                name,
                add,
                remove,
            } => {
                write!(f, "change tags of {vg}/{name}")?;
                if !add.is_empty() {
                    write!(f, " (add {})", add.join(", "))?;
                }
                if !remove.is_empty() {
                    write!(f, " (remove {})", remove.join(", "))?;
                }
                Ok(())
            }
            LvmRequest::Extend { vg, name, size } => {
                write!(f, "extend {vg}/{name} to {}", show_bytes(*size))
            }
            LvmRequest::Remove { vg, name } => write!(f, "remove logical volume {vg}/{name}"),
            LvmRequest::MakeFilesystem { device, filesystem } => {
                write!(
                    f,
                    "make a {} filesystem on {}",
                    fs_name(*filesystem),
                    device.display()
                )
            }
            LvmRequest::GrowFilesystem { device, filesystem } => write!(
                f,
                "grow the {} filesystem on {}",
                fs_name(*filesystem),
                device.display()
            ),
            LvmRequest::WriteImage {
                image,
                format,
                device,
            } => write!(
                f,
                "write image {} ({format}) onto {}",
                image.display(),
                device.display()
            ),
        }
    }
}

/// `ext4`, `xfs`, `btrfs`, `swap`: as manifests and tools name it.
pub fn fs_name(filesystem: Filesystem) -> &'static str {
    match filesystem {
        Filesystem::Ext4 => "ext4",
        Filesystem::Xfs => "xfs",
        Filesystem::Btrfs => "btrfs",
        Filesystem::Swap => "swap",
    }
}

/// The tool's answer to a failed request or report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvmError {
    #[error("{program} is not installed on this host")]
    NotInstalled { program: String },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{program} did not finish within {seconds}s and was killed")]
    TimedOut { program: String, seconds: u64 },
    #[error("cannot run {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("cannot read what {program} printed: {message}")]
    Unreadable { program: String, message: String },
    /// A file operation on a file volume failed: `what` names the operation and the path.
    #[error("{what}: {message}")]
    Io { what: String, message: String },
}

impl LvmError {
    /// Whether asking again can succeed: a busy device, a lock, a timeout or a failed
    /// start may clear; a missing tool, a refusal (no space, no such VG), an answer
    /// gitvisor cannot read need someone to act.
    pub fn class(&self) -> FailureClass {
        match self {
            LvmError::NotInstalled { .. } | LvmError::Unreadable { .. } | LvmError::Io { .. } => {
                FailureClass::NeedsUser
            }
            LvmError::TimedOut { .. } | LvmError::Spawn { .. } => FailureClass::Transient,
            LvmError::Failed { stderr, .. } => {
                let stderr = stderr.to_ascii_lowercase();
                if ["in use", "busy", "lock"]
                    .iter()
                    .any(|word| stderr.contains(word))
                {
                    FailureClass::Transient
                } else {
                    FailureClass::NeedsUser
                }
            }
        }
    }
}

/// Told how far a long request got, in percent (an image copy).
pub type ProgressSink<'a> = &'a (dyn Fn(u8) + Send + Sync);

/// The host as the volume driver sees it. Shared by concurrent `apply` tasks, so
/// `Send + Sync` and `&self`.
#[async_trait]
pub trait LvmSeam: Send + Sync {
    /// Every VG and every visible LV: one `vgs` and one `lvs` for the whole host, never
    /// one call per volume.
    async fn report(&self) -> Result<LvmReport, LvmError>;

    /// What the image at `path` holds (format, virtual size).
    async fn inspect_image(&self, path: &std::path::Path) -> Result<ImageInfo, LvmError>;

    /// Carry out one request; a long one (an image copy) tells `progress` as it goes.
    async fn send(&self, request: &LvmRequest, progress: ProgressSink<'_>) -> Result<(), LvmError>;
}
