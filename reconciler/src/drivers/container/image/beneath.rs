//! Reading the files of an image source (an OCI layout or docker-archive directory, or
//! an archive unpacked under `tmp/`) as what they are inside it, never as whatever a
//! symlink in it points at on the host.
//!
//! # Why
//!
//! An archive is someone else's: unpacking it keeps its symlinks (`docker save` links a
//! repeated layer to its first copy), and a symlink may name any host file. Followed on
//! the host, `manifest.json -> /dev/zero` or `blobs -> /var/lib/…` would make gitvisor read
//! the host, or hang, or hand a host file to a container as a layer. So every file of a
//! source is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the
//! source's root: a symlink that stays inside the source is followed (it names another
//! entry of the same archive), one that leaves it (absolute, or `..` past the root) is
//! refused, naming the entry; and what is opened must be a regular file. Metadata files
//! (indexes, manifests, configs) are read up to [`MAX_METADATA`] bytes.
//!
//! Kernels before 5.6 lack `openat2`; there every path component is checked not to be a
//! symlink before the file is opened with `O_NOFOLLOW`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::error::ImageError;

/// Indexes, manifests and configs are small; anything bigger is not one.
pub const MAX_METADATA: u64 = 4 << 20;

/// The root of an image source, for reading the files in it.
pub struct SourceDir<'a> {
    /// The image as declared, for messages.
    pub image: &'a str,
    pub root: &'a Path,
}

impl SourceDir<'_> {
    fn refused(&self, entry: &str, why: impl Into<String>) -> ImageError {
        ImageError::Unsafe {
            image: self.image.to_owned(),
            source_root: self.root.to_path_buf(),
            entry: entry.to_owned(),
            why: why.into(),
        }
    }

    /// The regular file `entry` (a relative path) of the source, opened for reading.
    pub fn open(&self, entry: &str) -> Result<fs::File, ImageError> {
        let relative = Path::new(entry);
        if entry.is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(self.refused(
                entry,
                "it is not a plain relative path (absolute, or with `..`), so it names a file outside the image",
            ));
        }
        let root = fs::File::options()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(self.root)
            .map_err(ImageError::io(self.image, "open", self.root))?;
        // Non-blocking: a FIFO in the source answers at once instead of waiting for a
        // writer (and is then refused as not a regular file).
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let opened = match rustix::fs::openat2(
            &root,
            relative,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::NOSYS) => self.open_without_openat2(entry, relative),
            Err(Errno::XDEV) | Err(Errno::LOOP) => Err(self.refused(
                entry,
                "it is, or goes through, a symlink that leads outside the image",
            )),
            Err(errno) => {
                Err(ImageError::io(self.image, "open", self.root.join(relative))(errno.into()))
            }
            Ok(fd) => Ok(fs::File::from(fd)),
        }?;
        let meta = opened.metadata().map_err(ImageError::io(
            self.image,
            "read",
            self.root.join(relative),
        ))?;
        let kind = meta.file_type();
        if !kind.is_file() {
            let what = if kind.is_dir() {
                "a directory"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Err(self.refused(entry, format!("it is {what}, not a regular file")));
        }
        Ok(opened)
    }

    /// Old kernels: refuse a symlink anywhere on the way, then open the last component
    /// without following it.
    fn open_without_openat2(&self, entry: &str, relative: &Path) -> Result<fs::File, ImageError> {
        let mut path = self.root.to_path_buf();
        for part in relative.components() {
            path.push(part);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(self.refused(
                    entry,
                    "it goes through a symlink, which this kernel (no openat2) cannot follow safely",
                ));
            }
        }
        fs::File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(&path)
            .map_err(ImageError::io(self.image, "open", path))
    }

    /// The whole of the metadata file `entry`, up to [`MAX_METADATA`] bytes.
    pub fn read_metadata(&self, entry: &str) -> Result<Vec<u8>, ImageError> {
        let file = self.open(entry)?;
        let mut bytes = Vec::new();
        file.take(MAX_METADATA + 1)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(self.image, "read", self.root.join(entry)))?;
        if bytes.len() as u64 > MAX_METADATA {
            return Err(ImageError::format(
                self.image,
                entry,
                format!(
                    "larger than {} MiB; not an image index, manifest or config",
                    MAX_METADATA >> 20
                ),
            ));
        }
        Ok(bytes)
    }
}
