//! The host seam of file volumes (`spec.directory`): what the driver reads of the image
//! files in the volume directories, and the requests it sends, as plain values.
//!
//! A file volume is `DIR/NAME.FORMAT`. It is made under a temporary name in the same
//! directory, `DIR/.NAME.FORMAT.partial`, written completely, and only then linked to its
//! real name ([`FileRequest::Publish`]: `link` + `unlink`, which never replaces a file):
//! so a file under a volume's real name is always complete, and a crash leaves at most a
//! `.partial` that the next plan removes (when provably gitvisor's) and makes again.
//!
//! # The marker: extended attributes on the file
//!
//! gitvisor marks its files with user extended attributes: `user.gitvisor.id =
//! Volume/NAME` and `user.gitvisor.reclaim = Retain|Delete`, set on the empty temporary
//! file *before* anything is written into it (qemu-img writes into that same inode), so
//! no unmarked file of gitvisor's ever exists. An xattr rather than a sidecar file,
//! because it belongs to the file: it moves with a rename, goes with a delete, is copied
//! by `cp -a`/`rsync -X`, and cannot be left behind pointing at nothing or be out of step
//! with the file; ext4, xfs, btrfs, tmpfs and NFS 4.2 keep user xattrs. A filesystem
//! that refuses them fails the create with that reason (and the empty temporary file
//! is removed). The store record is the other half of ownership, as for every kind.
//!
//! # Observation
//!
//! One batch for the whole plan ([`FileSeam::observe`]): list each directory, and of
//! every image-like entry (`*.qcow2`, `*.raw`, `.*.partial`) read the xattrs and the
//! first 512 bytes (the qcow2 header says format, virtual size and backing file; any
//! other file is raw and its length is its size). Reading the header is what `qemu-img
//! info` would do, without a process per file. Directories gitvisor has ever made a
//! volume in are remembered (`<state>/volume-directories`), so a volume whose
//! declaration is gone is still found to prune. Each directory is read on its own
//! blocking thread under a short deadline: a directory on a dead NFS share is reported
//! unreachable ([`FileObservation::unreachable`]) while the others are observed.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use super::seam::{LvmError, ProgressSink};
use super::size::show_bytes;
use crate::drivers::volume::{FileFormat, ReclaimPolicy};

/// The xattr naming the Volume a file is (`Volume/NAME`).
pub const ID_XATTR: &str = "user.gitvisor.id";
/// The xattr holding the reclaim policy the file was made (or last updated) with.
pub const RECLAIM_XATTR: &str = "user.gitvisor.reclaim";
/// The suffix of a file volume's temporary name while it is written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// One image-like file in a volume directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub path: PathBuf,
    /// `qcow2` when the file starts with qcow2's magic, else `raw`.
    pub format: FileFormat,
    /// The size of the disk it holds (a raw file's length; a qcow2 header's size).
    pub virtual_size: u64,
    /// A qcow2 overlay's backing file, as its header names it.
    pub backing: Option<String>,
    /// `user.gitvisor.id`, when set.
    pub owner: Option<String>,
    /// `user.gitvisor.reclaim`, when set and readable.
    pub reclaim: Option<ReclaimPolicy>,
}

impl FileState {
    /// Whether it carries gitvisor's marker for Volume `name`.
    pub fn marked_for(&self, name: &str) -> bool {
        self.owner.as_deref() == Some(marker_value(name).as_str())
    }
}

/// `Volume/NAME`: the value of [`ID_XATTR`].
pub fn marker_value(name: &str) -> String {
    format!("Volume/{name}")
}

/// What a new file volume starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// An empty (sparse) disk.
    Empty,
    /// An image (of `format`, as `qemu-img info` named it) copied in with `qemu-img
    /// convert`.
    Image { image: PathBuf, format: String },
    /// A qcow2 overlay over `base` (a qcow2 file volume).
    Clone { base: PathBuf },
    /// An image from a URL, downloaded at apply: apply turns it into `Image`.
    Download,
}

/// One change to the file volumes. Paths are absolute; sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRequest {
    /// Remember `directory`, make it when missing, make the empty temporary file
    /// `partial` with the marker, then write `content` into it as a `format` disk of
    /// `size`.
    Create {
        directory: PathBuf,
        partial: PathBuf,
        format: FileFormat,
        size: u64,
        content: FileContent,
        id: String,
        reclaim: ReclaimPolicy,
    },
    /// Give the complete `partial` its real name `path` (never over an existing file).
    Publish { partial: PathBuf, path: PathBuf },
    /// Grow the disk to `size` (`qemu-img resize` for qcow2, a longer sparse file for raw).
    Grow {
        path: PathBuf,
        format: FileFormat,
        size: u64,
    },
    /// Set the marker and the reclaim policy (adoption, or a new policy).
    Mark {
        path: PathBuf,
        id: String,
        reclaim: ReclaimPolicy,
    },
    /// Take gitvisor's xattrs off (a pruned volume that is retained).
    Unmark { path: PathBuf },
    /// Remove the file.
    Remove { path: PathBuf },
}

impl fmt::Display for FileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileRequest::Create {
                partial,
                format,
                size,
                content,
                ..
            } => {
                write!(
                    f,
                    "make {} disk {} of {}",
                    format.as_str(),
                    partial.display(),
                    show_bytes(*size)
                )?;
                match content {
                    FileContent::Empty | FileContent::Download => Ok(()),
                    FileContent::Image { image, format } => {
                        write!(f, " from image {} ({format})", image.display())
                    }
                    FileContent::Clone { base } => {
                        write!(f, " as a copy-on-write clone of {}", base.display())
                    }
                }
            }
            FileRequest::Publish { partial, path } => {
                write!(f, "rename {} to {}", partial.display(), path.display())
            }
            FileRequest::Grow { path, size, .. } => {
                write!(f, "grow {} to {}", path.display(), show_bytes(*size))
            }
            FileRequest::Mark { path, reclaim, .. } => write!(
                f,
                "mark {} as gitvisor's (reclaimPolicy {reclaim:?})",
                path.display()
            ),
            FileRequest::Unmark { path } => {
                write!(f, "take gitvisor's marker off {}", path.display())
            }
            FileRequest::Remove { path } => write!(f, "remove {}", path.display()),
        }
    }
}

/// What one observation found: the files, and the directories that did not answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileObservation {
    pub files: Vec<FileState>,
    /// Directories that could not be read in time (a dead NFS server, a hung disk), with
    /// why: their volumes are refused in the plan, the others are planned as usual.
    pub unreachable: std::collections::BTreeMap<PathBuf, String>,
}

/// The host's file volumes as the driver sees them. Shared by concurrent applies.
#[async_trait]
pub trait FileSeam: Send + Sync {
    /// Every image-like file in `directories` and in every directory gitvisor made a
    /// volume in before: one batch, off the async runtime, each directory under its own
    /// deadline, so one that does not answer is reported and holds up no other.
    async fn observe(&self, directories: &[PathBuf]) -> Result<FileObservation, LvmError>;

    /// Carry out one request; a long one (an image copy) tells `progress` as it goes.
    async fn send(&self, request: &FileRequest, progress: ProgressSink<'_>)
    -> Result<(), LvmError>;
}
