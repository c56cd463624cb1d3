//! Errors of the image store: each names the image (as declared), what was being read or
//! written, and what to do; the host's answer is the `#[source]`.

use std::io;
use std::path::PathBuf;

use crate::contract::{Classify, FailureClass};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing a file of the image or the store failed.
    #[error("image {image}: {operation} {}", path.display())]
    Io {
        image: String,
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A layer entry that could write outside the layer, or a file type images may not
    /// carry.
    #[error(
        "image {image}: layer {layer}: entry {entry:?} is rejected: {why}; the archive is unsafe to unpack, rebuild the image without it"
    )]
    Hostile {
        image: String,
        layer: String,
        entry: String,
        why: String,
    },

    /// A file of an archive or layout that is not a regular file inside it: a symlink
    /// out of it, a device, a directory where a file belongs.
    #[error(
        "image {image}: {entry:?} in {} is refused: {why}; gitvisor reads an image's files only as regular files inside the archive or layout, rebuild it without that entry",
        source_root.display()
    )]
    Unsafe {
        image: String,
        source_root: PathBuf,
        entry: String,
        why: String,
    },

    /// An image that unpacks to more than the store accepts.
    #[error(
        "image {image}: {what} unpacks to more than {limit} bytes, the most one image may take (GITVISOR_IMAGE_MAX_UNPACKED_SIZE); a layer that large is broken or hostile, or raise the limit"
    )]
    TooLarge {
        image: String,
        what: String,
        limit: u64,
    },

    /// The import was given up (gitvisor is stopping, or the step ran past its deadline).
    #[error("image {image}: the import was abandoned ({why}); the next apply starts it again")]
    Abandoned { image: String, why: String },

    /// A blob's content does not have the digest that names it.
    #[error(
        "image {image}: {what} should have digest {expected} but has {actual}; the image is corrupt or was tampered with, fetch or build it again"
    )]
    DigestMismatch {
        image: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// The image's metadata is not what the format says it must be.
    #[error("image {image}: {what}: {why}")]
    Format {
        image: String,
        what: String,
        why: String,
    },

    /// The image uses something this build does not read.
    #[error("image {image}: {what} is not supported: {why}")]
    Unsupported {
        image: String,
        what: String,
        why: String,
    },

    /// The image reference names nothing usable.
    #[error("image {image}: {why}")]
    NotFound { image: String, why: String },

    /// Talking to a registry failed.
    #[error("image {image}: {operation}")]
    Registry {
        image: String,
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        transient: bool,
    },
}

impl ImageError {
    pub fn io(
        image: &str,
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ImageError {
        let image = image.to_owned();
        let path = path.into();
        move |source| ImageError::Io {
            image,
            operation,
            path,
            source,
        }
    }

    pub fn format(image: &str, what: impl Into<String>, why: impl ToString) -> ImageError {
        ImageError::Format {
            image: image.to_owned(),
            what: what.into(),
            why: why.to_string(),
        }
    }
}

impl Classify for ImageError {
    fn class(&self) -> FailureClass {
        match self {
            ImageError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    FailureClass::NeedsUser
                }
                _ => match source.raw_os_error() {
                    // Out of space or quota: someone must make room.
                    Some(28) | Some(122) => FailureClass::NeedsUser,
                    _ => FailureClass::Transient,
                },
            },
            ImageError::Abandoned { .. } => FailureClass::Transient,
            ImageError::Hostile { .. }
            | ImageError::Unsafe { .. }
            | ImageError::TooLarge { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::Format { .. }
            | ImageError::Unsupported { .. }
            | ImageError::NotFound { .. } => FailureClass::NeedsUser,
            ImageError::Registry { transient, .. } => {
                if *transient {
                    FailureClass::Transient
                } else {
                    FailureClass::NeedsUser
                }
            }
        }
    }
}
