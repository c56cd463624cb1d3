//! Unpacking one image layer (a tar stream) into its own directory, safely, in the form
//! overlayfs reads as a lower layer.
//!
//! # Why not `tar::Archive::unpack`
//!
//! A layer comes from outside (a registry, an archive someone handed over), so every entry
//! is checked before anything is written, and nothing ever follows a symlink:
//!
//! - paths are relative and lexical: an absolute path or a `..` component is rejected;
//! - an entry whose parent directory is a symlink (made by an earlier entry) is rejected,
//!   since writing through it could land outside the layer;
//! - a relative symlink whose target climbs above the layer's root is rejected (absolute
//!   targets are allowed: the kernel resolves them inside the container's own root);
//! - a hard link must name an existing non-directory inside the layer, by a clean path;
//! - character and block devices are rejected (the runtime gives containers their
//!   `/dev`); `trusted.*` extended attributes are dropped (`trusted.overlay.*` would let
//!   a layer forge overlayfs metadata).
//!
//! # Whiteouts
//!
//! OCI layers mark deletions with `.wh.NAME` files and opaque directories with
//! `.wh..wh..opq`. Layers stay separate directories, stacked by overlayfs, so whiteouts
//! are written in overlayfs's own form: a `0:0` character device named `NAME`, and the
//! `trusted.overlay.opaque=y` attribute on the directory (as containerd's overlay
//! snapshotter does).
//!
//! Kept: mode bits (setuid included), owner and group, `security.capability` and `user.*`
//! attributes. Not kept: modification times (nothing in a container depends on the
//! image's timestamps for correctness).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::error::ImageError;

/// The mode of a directory the layer needs but does not list, and of a layer's root.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// The prefix of an OCI whiteout file.
const WHITEOUT: &str = ".wh.";
/// The name of an OCI opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// Where the layer is going, for error messages.
pub struct LayerTarget<'a> {
    pub image: &'a str,
    pub layer: &'a str,
    pub root: &'a Path,
}

impl LayerTarget<'_> {
    fn hostile(&self, entry: &Path, why: impl Into<String>) -> ImageError {
        ImageError::Hostile {
            image: self.image.to_owned(),
            layer: self.layer.to_owned(),
            entry: entry.display().to_string(),
            why: why.into(),
        }
    }

    fn io(&self, operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
        ImageError::io(self.image, operation, path)
    }

    /// Unpacks `archive` (an uncompressed tar stream) into `root`, an empty directory.
    pub fn unpack(&self, archive: impl Read) -> Result<(), ImageError> {
        let mut archive = tar::Archive::new(archive);
        let entries = archive
            .entries()
            .map_err(self.io("read the layer archive", self.root))?;
        for entry in entries {
            let entry = entry.map_err(self.io("read the layer archive", self.root))?;
            self.entry(entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let relative = self.clean(&raw, &raw)?;
        let Some(name) = relative.file_name().map(|n| n.to_os_string()) else {
            // The layer's root itself (`./`): nothing to create.
            return Ok(());
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE.as_bytes() {
            let dir = self.directory(&raw, parent)?;
            return xattr::set(&dir, "trusted.overlay.opaque", b"y")
                .map_err(self.io("mark opaque directory", &dir));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.hostile(&raw, "a whiteout must name a file"));
            }
            let dir = self.directory(&raw, parent)?;
            let target = dir.join(OsStr::from_bytes(hidden));
            self.clear(&target)?;
            return nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
            .map_err(self.io("write whiteout", &target));
        }

        let dir = self.directory(&raw, parent)?;
        let path = dir.join(&name);
        let header = entry.header().clone();
        let mode = header
            .mode()
            .map_err(self.io("read the entry's mode", &path))?
            & 0o7777;
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        self.clear(&path)?;
                        fs::create_dir(&path).map_err(self.io("create directory", &path))?;
                    }
                    Err(_) => fs::create_dir(&path).map_err(self.io("create directory", &path))?,
                }
                self.permissions(&path, mode)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                self.clear(&path)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(self.io("create file", &path))?;
                io::copy(&mut entry, &mut file).map_err(self.io("write file", &path))?;
                self.permissions(&path, mode)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|bytes| PathBuf::from(OsStr::from_bytes(&bytes)))
                    .ok_or_else(|| self.hostile(&raw, "a symlink without a target"))?;
                if target.is_relative() && escapes(parent, &target) {
                    return Err(self.hostile(
                        &raw,
                        format!(
                            "symlink to {} points outside the image's root",
                            target.display()
                        ),
                    ));
                }
                self.clear(&path)?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(self.io("create symlink", &path))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|bytes| PathBuf::from(OsStr::from_bytes(&bytes)))
                    .ok_or_else(|| self.hostile(&raw, "a hard link without a target"))?;
                let target_relative = self.clean(&raw, &target)?;
                let target_parent = target_relative.parent().unwrap_or(Path::new(""));
                let existing = self
                    .existing_directory(&raw, target_parent)?
                    .join(target_relative.file_name().unwrap_or_default());
                match fs::symlink_metadata(&existing) {
                    Ok(meta) if !meta.is_dir() => {}
                    Ok(_) => return Err(self.hostile(&raw, "a hard link to a directory")),
                    Err(_) => {
                        return Err(self.hostile(
                            &raw,
                            format!(
                                "a hard link to {}, which the layer does not contain",
                                target.display()
                            ),
                        ));
                    }
                }
                if existing == path {
                    return Ok(());
                }
                self.clear(&path)?;
                fs::hard_link(&existing, &path).map_err(self.io("create hard link", &path))?;
                // A hard link shares the target's inode: owner and mode are the target's.
                return Ok(());
            }
            EntryType::Fifo => {
                self.clear(&path)?;
                nix::unistd::mkfifo(
                    &path,
                    nix::sys::stat::Mode::from_bits_truncate(mode as nix::libc::mode_t),
                )
                .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
                .map_err(self.io("create fifo", &path))?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(self.hostile(
                    &raw,
                    "a device node; images may not carry devices (the runtime provides /dev)",
                ));
            }
            other => {
                return Err(ImageError::Unsupported {
                    image: self.image.to_owned(),
                    what: format!("layer {} entry {}", self.layer, raw.display()),
                    why: format!("tar entry type {other:?}"),
                });
            }
        }
        let uid = header
            .uid()
            .map_err(self.io("read the entry's owner", &path))?;
        let gid = header
            .gid()
            .map_err(self.io("read the entry's group", &path))?;
        std::os::unix::fs::lchown(&path, u32::try_from(uid).ok(), u32::try_from(gid).ok())
            .map_err(self.io("set owner", &path))?;
        if let Some(extensions) = entry
            .pax_extensions()
            .map_err(self.io("read extended headers", &path))?
        {
            for extension in extensions.flatten() {
                let Some(attribute) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if attribute.starts_with(b"security.capability") || attribute.starts_with(b"user.")
                {
                    xattr::set(&path, OsStr::from_bytes(attribute), extension.value_bytes())
                        .map_err(self.io("set extended attribute", &path))?;
                }
            }
        }
        Ok(())
    }

    /// `path` as a clean relative path: `./` prefixes dropped, absolute paths and `..`
    /// rejected.
    fn clean(&self, entry: &Path, path: &Path) -> Result<PathBuf, ImageError> {
        let mut clean = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.hostile(entry, "an absolute path"));
                }
                Component::ParentDir => {
                    return Err(self.hostile(entry, "a `..` path component"));
                }
            }
        }
        Ok(clean)
    }

    /// The directory `relative` below the root, created with its missing parents, never
    /// through a symlink.
    fn directory(&self, entry: &Path, relative: &Path) -> Result<PathBuf, ImageError> {
        self.walk(entry, relative, true)
    }

    /// The existing directory `relative`, reached without following a symlink.
    fn existing_directory(&self, entry: &Path, relative: &Path) -> Result<PathBuf, ImageError> {
        self.walk(entry, relative, false)
    }

    fn walk(&self, entry: &Path, relative: &Path, create: bool) -> Result<PathBuf, ImageError> {
        let mut path = self.root.to_path_buf();
        for part in relative.components() {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.hostile(
                        entry,
                        format!(
                            "its parent {} is a symlink, and writing through it could leave the image's root",
                            path.strip_prefix(self.root).unwrap_or(&path).display()
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(self.hostile(
                        entry,
                        format!(
                            "its parent {} is not a directory",
                            path.strip_prefix(self.root).unwrap_or(&path).display()
                        ),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound && create => {
                    // A parent the layer does not list: 0755 as other engines make it,
                    // not whatever the umask of the shell that ran gitvisor leaves.
                    fs::create_dir(&path).map_err(self.io("create directory", &path))?;
                    self.permissions(&path, IMPLICIT_DIR_MODE)?;
                }
                Err(error) => return Err(self.io("read", &path)(error)),
            }
        }
        Ok(path)
    }

    /// Removes whatever is at `path` (an entry replaced by a later one of the same
    /// layer), without following symlinks.
    fn clear(&self, path: &Path) -> Result<(), ImageError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                fs::remove_dir_all(path).map_err(self.io("replace directory", path))
            }
            Ok(_) => fs::remove_file(path).map_err(self.io("replace file", path)),
            Err(_) => Ok(()),
        }
    }

    fn permissions(&self, path: &Path, mode: u32) -> Result<(), ImageError> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(self.io("set permissions", path))
    }
}

/// Whether a relative symlink target, followed from `dir` (relative to the root), climbs
/// above the root.
fn escapes(dir: &Path, target: &Path) -> bool {
    let mut depth = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as i64;
    for component in target.components() {
        match component {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    /// A tar entry written byte for byte (tar::Builder refuses hostile names, which is
    /// exactly what these tests need to write).
    pub(crate) fn raw_entry(
        out: &mut Vec<u8>,
        name: &str,
        kind: EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().expect("gnu header");
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(data.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub(crate) fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    fn unpack(archive: &[u8]) -> (tempfile::TempDir, Result<(), ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = LayerTarget {
            image: "test",
            layer: "sha256:0",
            root: dir.path(),
        }
        .unpack(archive);
        (dir, result)
    }

    fn rejected(entries: &[(&str, EntryType, Option<&str>)]) -> String {
        let mut out = Vec::new();
        for (name, kind, link) in entries {
            raw_entry(&mut out, name, *kind, *link, b"x");
        }
        let (_dir, result) = unpack(&finish(out));
        match result {
            Err(error @ ImageError::Hostile { .. }) => error.to_string(),
            other => panic!("{entries:?} was not rejected: {other:?}"),
        }
    }

    #[test]
    fn paths_that_leave_the_layer_are_rejected() {
        assert!(rejected(&[("../evil", EntryType::Regular, None)]).contains("`..`"));
        assert!(rejected(&[("a/../../evil", EntryType::Regular, None)]).contains("`..`"));
        assert!(rejected(&[("/etc/passwd", EntryType::Regular, None)]).contains("absolute"));
        assert!(
            rejected(&[("link", EntryType::Symlink, Some("../../.."))]).contains("points outside")
        );
        assert!(
            rejected(&[("a/b", EntryType::Symlink, Some("../../x"))]).contains("points outside")
        );
        // A symlink to a directory outside, then a file written through it.
        assert!(
            rejected(&[
                ("out", EntryType::Symlink, Some("/tmp")),
                ("out/evil", EntryType::Regular, None),
            ])
            .contains("is a symlink")
        );
        assert!(rejected(&[("hl", EntryType::Link, Some("../../etc/shadow"))]).contains("`..`"));
        assert!(rejected(&[("hl", EntryType::Link, Some("missing"))]).contains("does not contain"));
        assert!(rejected(&[("dev/sda", EntryType::Block, None)]).contains("device node"));
        assert!(rejected(&[("dev/null", EntryType::Char, None)]).contains("device node"));
    }

    #[test]
    fn ordinary_entries_are_unpacked_and_safe_symlinks_kept() {
        let mut out = Vec::new();
        raw_entry(&mut out, "./bin/", EntryType::Directory, None, b"");
        raw_entry(&mut out, "./bin/busybox", EntryType::Regular, None, b"ELF");
        raw_entry(
            &mut out,
            "./bin/sh",
            EntryType::Symlink,
            Some("busybox"),
            b"",
        );
        raw_entry(
            &mut out,
            "./usr/bin/env",
            EntryType::Symlink,
            Some("/bin/busybox"),
            b"",
        );
        raw_entry(
            &mut out,
            "./lib/up",
            EntryType::Symlink,
            Some("../bin"),
            b"",
        );
        raw_entry(
            &mut out,
            "./bin/ls",
            EntryType::Link,
            Some("./bin/busybox"),
            b"",
        );
        let (dir, result) = unpack(&finish(out));
        result.unwrap();
        let root = dir.path();
        assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"ELF");
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(root.join("usr/bin/env")).unwrap(),
            Path::new("/bin/busybox")
        );
        let ls = fs::metadata(root.join("bin/ls")).unwrap();
        assert_eq!(
            ls.ino(),
            fs::metadata(root.join("bin/busybox")).unwrap().ino()
        );
    }

    #[test]
    fn whiteouts_become_overlayfs_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            crate::drivers::container::testkit::skip_loudly(
                "whiteouts_become_overlayfs_whiteouts",
                "mknod and trusted.* attributes need root",
            );
            return;
        }
        let mut out = Vec::new();
        raw_entry(&mut out, "etc/.wh.motd", EntryType::Regular, None, b"");
        raw_entry(&mut out, "var/.wh..wh..opq", EntryType::Regular, None, b"");
        let (dir, result) = unpack(&finish(out));
        result.unwrap();
        let motd = fs::symlink_metadata(dir.path().join("etc/motd")).unwrap();
        assert!(motd.file_type().is_char_device());
        assert_eq!(motd.rdev(), 0);
        assert_eq!(
            xattr::get(dir.path().join("var"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn escape_is_lexical_from_the_links_directory() {
        assert!(!escapes(Path::new("a/b"), Path::new("../c")));
        assert!(!escapes(Path::new("a/b"), Path::new("../../c")));
        assert!(escapes(Path::new("a/b"), Path::new("../../../c")));
        assert!(escapes(Path::new(""), Path::new("..")));
        assert!(!escapes(Path::new(""), Path::new("x/../y")));
    }
}
