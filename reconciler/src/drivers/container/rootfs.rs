//! A container's root file system: the image's layers as overlayfs lower layers under a
//! writable layer of its own, mounted at `<bundle>/rootfs`; and reading files of the
//! image (the user database) without ever leaving it.
//!
//! The mount is made in gitvisor's mount namespace, where it stays when gitvisor exits;
//! the container keeps its own copy of it in its mount namespace anyway.
//!
//! The overlay is mounted without `volatile`, on purpose. `volatile` would make every
//! `fsync` and `syncfs` inside the container a no-op on its writable layer, so a program
//! that keeps data there (a database; the layer is kept across `state: Stopped` and back
//! and across restarts) would lose, silently, the durability it asked for. It would
//! also leave `work/incompat/volatile` behind, which makes the kernel refuse every later
//! mount of that layer until someone removes it. All it would save is the sync of the
//! layer's dirty pages at unmount.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::bundle::ResolvedUser;
use super::seam::HostError;

/// Whether something is mounted at `target`, from `/proc/self/mountinfo`.
pub fn is_mounted(target: &Path) -> Result<bool, HostError> {
    let info =
        fs::read("/proc/self/mountinfo").map_err(HostError::io("read", "/proc/self/mountinfo"))?;
    let target = target.as_os_str().as_bytes();
    Ok(info.split(|b| *b == b'\n').any(|line| {
        line.split(|b| *b == b' ')
            .nth(4)
            .is_some_and(|point| unescape(point) == target)
    }))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|d| (b'0'..=b'7').contains(d))
        {
            let value =
                (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// The most layers a container's root file system stacks. overlayfs itself stops at 500;
/// images deeper than this are refused at import ([`super::image::MAX_LAYERS`]).
pub const MAX_LOWERS: usize = super::image::MAX_LAYERS;

/// Mounts `lowers` (bottom first) under `upper` at `target`, unless something is mounted
/// there already.
///
/// `mount(2)` carries the whole option string in one page (4 KiB), and a layer's path in
/// the store is over 100 bytes: spelled out, about 33 layers fill it. So each layer is
/// opened (`O_PATH`) and named by its descriptor, `/proc/self/fd/N` (at most 20 bytes),
/// which overlayfs resolves when it mounts: [`MAX_LOWERS`] layers fit with room to spare,
/// on every kernel. The descriptors are closed when the mount returns; overlayfs holds
/// the directories themselves. (`mountinfo` shows the descriptor names, which mean
/// nothing afterwards; nothing reads them back.)
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), HostError> {
    if is_mounted(target)? {
        return Ok(());
    }
    if lowers.is_empty() || lowers.len() > MAX_LOWERS {
        return Err(HostError::Invalid(format!(
            "the image has {} layers; a container's root file system stacks 1 to {MAX_LOWERS}, rebuild the image with fewer (squash some)",
            lowers.len()
        )));
    }
    for dir in [upper, work] {
        if dir
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err(HostError::Invalid(format!(
                "directory {} has a ',', ':' or '\\' in its path, which overlayfs options cannot carry; choose a run dir without them",
                dir.display()
            )));
        }
    }
    let opened = lowers
        .iter()
        .map(|lower| {
            fs::File::options()
                .read(true)
                .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
                .open(lower)
                .map_err(HostError::io("open the image layer", lower.as_path()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = OsString::from("lowerdir=");
    // overlayfs lists the top layer first.
    for (i, layer) in opened.iter().rev().enumerate() {
        if i > 0 {
            options.push(":");
        }
        options.push(format!("/proc/self/fd/{}", layer.as_raw_fd()));
    }
    options.push(",upperdir=");
    options.push(upper.as_os_str());
    options.push(",workdir=");
    options.push(work.as_os_str());
    let mounted = nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_os_str()),
    );
    drop(opened);
    mounted.map_err(|errno| {
        HostError::io("mount the overlay root file system at", target)(
            io::Error::from_raw_os_error(errno as i32),
        )
    })
}

/// Unmounts `target` (lazily, so a process still inside does not block it); nothing
/// mounted there counts as done.
pub fn unmount(target: &Path) -> Result<(), HostError> {
    if !is_mounted(target)? {
        return Ok(());
    }
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(HostError::io("unmount", target)(
            io::Error::from_raw_os_error(errno as i32),
        )),
    }
}

/// The path `relative` names inside `root`, with symlinks followed the way the kernel
/// would inside the container (absolute targets and `..` stay within `root`), so
/// nothing outside the image is ever read.
pub fn resolve_in_root(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = relative
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(PathBuf::from(p)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut current = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part.as_os_str() == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        match fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = fs::read_link(root.join(&candidate)).ok()?;
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(p) => pending.push(PathBuf::from(p)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => current = candidate,
        }
    }
    Some(root.join(current))
}

fn read_in_root(root: &Path, relative: &str) -> Option<String> {
    fs::read_to_string(resolve_in_root(root, Path::new(relative))?).ok()
}

/// Resolves `user` (`uid`, `uid:gid`, `name`, `name:group`; `None`: root) against the
/// image's `/etc/passwd` and `/etc/group`, read inside `rootfs`.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, HostError> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser::default());
    };
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && (fields[0] == name || fields[2] == name))
            .then(|| (fields[2].parse::<u32>().ok(), fields[3].parse::<u32>().ok()))
    });
    let uid = match (name.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some((Some(uid), _))) => uid,
        _ => {
            return Err(HostError::Invalid(format!(
                "user {name} is not in the image's /etc/passwd; give a numeric uid[:gid]"
            )));
        }
    };
    let gid = match group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(rootfs, "etc/group")
                .unwrap_or_default()
                .lines()
                .find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields.len() >= 3 && fields[0] == group)
                        .then(|| fields[2].parse::<u32>().ok())
                        .flatten()
                })
                .ok_or_else(|| {
                    HostError::Invalid(format!(
                        "group {group} is not in the image's /etc/group; give a numeric gid"
                    ))
                })?,
        },
        None => entry.and_then(|(_, gid)| gid).unwrap_or(0),
    };
    Ok(ResolvedUser { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("real")).unwrap();
        fs::write(
            r.join("real/passwd"),
            "app:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/real/passwd", r.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("etc/passwd")).unwrap(),
            r.join("real/passwd")
        );
        // `..` above the root stays at the root, as in the container; the absolute
        // symlink at etc/passwd is then followed inside the root too.
        assert_eq!(
            resolve_in_root(r, Path::new("up/passwd")).unwrap(),
            r.join("real/passwd")
        );
        assert_eq!(
            resolve_user(r, Some("app")).unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            resolve_user(r, Some("1000:5")).unwrap(),
            ResolvedUser { uid: 1000, gid: 5 }
        );
        assert_eq!(resolve_user(r, None).unwrap(), ResolvedUser::default());
        assert!(resolve_user(r, Some("nobody-here")).is_err());
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape(b"/a\\040b"), b"/a b");
        assert_eq!(unescape(b"/plain"), b"/plain");
    }
}
