//! Who holds a mount, found from `/proc` without touching the mount.
//!
//! For every process: the targets of `/proc/PID/cwd`, `/proc/PID/root` and each
//! `/proc/PID/fd/N` are read as links (`readlink` prints the kernel's name of the
//! file, from its dentry in memory, and never asks the NFS server), and a path at or
//! under the mount point holds it. A process in a mount namespace of its own (a
//! container that mounts the share) is found by its `/proc/PID/mountinfo`: a mount of
//! the same file system (the same `major:minor`) there holds the share too, though
//! `umount` here would not notice it. Nothing is `stat`ed: on a dead server a `stat`
//! would wait.
//!
//! Blocking (reads `/proc`): run on a blocking thread, under a deadline.

use std::path::Path;

use super::mountinfo::{self, MountEntry};
use super::seam::Holder;

/// Every process holding `mount`, found in `proc` (`/proc`), except `self_pid`.
pub fn scan(proc: &Path, mount: &MountEntry, self_pid: u32) -> Vec<Holder> {
    let own_namespace = std::fs::read_link(proc.join("self/ns/mnt")).ok();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == self_pid {
            continue;
        }
        let dir = entry.path();
        if let Some(how) = holds(&dir, mount, own_namespace.as_deref()) {
            let command = std::fs::read_to_string(dir.join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "?".into());
            holders.push(Holder { pid, command, how });
        }
    }
    holders.sort_by_key(|h| h.pid);
    holders
}

/// How the process at `dir` holds `mount`, if it does.
fn holds(dir: &Path, mount: &MountEntry, own_namespace: Option<&Path>) -> Option<String> {
    let under = |path: &Path| {
        let path = path.to_string_lossy();
        let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
        path == mount.mount_point
            || path
                .strip_prefix(mount.mount_point.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let namespace = std::fs::read_link(dir.join("ns/mnt")).ok();
    let same_namespace = namespace.as_deref() == own_namespace;
    if same_namespace {
        for (link, what) in [("cwd", "works in"), ("root", "has its root in")] {
            if let Ok(target) = std::fs::read_link(dir.join(link))
                && under(&target)
            {
                return Some(format!("{what} {}", target.display()));
            }
        }
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path())
                    && under(&target)
                {
                    return Some(format!("has {} open", target.display()));
                }
            }
        }
        return None;
    }
    // Another mount namespace: a bind of the same file system there.
    let text = std::fs::read_to_string(dir.join("mountinfo")).ok()?;
    mountinfo::parse(&text)
        .into_iter()
        .find(|m| m.device == mount.device && m.is_nfs())
        .map(|m| {
            format!(
                "mounts the share at {} in its own mount namespace",
                m.mount_point
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_with_a_file_open_under_the_mount_holds_it_and_one_beside_it_does_not() {
        let proc = tempfile::tempdir().unwrap();
        let share = tempfile::tempdir().unwrap();
        let mount_point = share.path().to_string_lossy().into_owned();
        let ns = proc.path().join("mntns");
        std::fs::write(&ns, "").unwrap();
        std::fs::create_dir_all(proc.path().join("self/ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[1]", proc.path().join("self/ns/mnt")).unwrap();
        for (pid, file) in [
            (10, format!("{mount_point}/f")),
            (11, format!("{mount_point}x/f")),
        ] {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::os::unix::fs::symlink("mnt:[1]", dir.join("ns/mnt")).unwrap();
            std::os::unix::fs::symlink("/", dir.join("cwd")).unwrap();
            std::os::unix::fs::symlink(&file, dir.join("fd/3")).unwrap();
            std::fs::write(dir.join("comm"), "sleep\n").unwrap();
        }
        let mount = MountEntry {
            mount_id: 95,
            device: "0:53".into(),
            mount_point: mount_point.clone(),
            mount_options: vec!["rw".into()],
            fs_type: "nfs4".into(),
            source: "s:/e".into(),
            super_options: vec![],
        };
        // A container: another mount namespace, with a bind of the same file system.
        let container = proc.path().join("12");
        std::fs::create_dir_all(container.join("ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[2]", container.join("ns/mnt")).unwrap();
        std::fs::write(container.join("comm"), "sleep\n").unwrap();
        std::fs::write(
            container.join("mountinfo"),
            "700 600 0:53 /sub /data ro,relatime - nfs4 10.77.0.1:/media ro,vers=4.2\n",
        )
        .unwrap();
        // Another namespace with other mounts only.
        let other = proc.path().join("13");
        std::fs::create_dir_all(other.join("ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[3]", other.join("ns/mnt")).unwrap();
        std::fs::write(other.join("mountinfo"), "1 0 0:21 / / rw - tmpfs t rw\n").unwrap();
        let holders = scan(proc.path(), &mount, 1);
        assert_eq!(holders.len(), 2, "{holders:?}");
        assert_eq!(holders[1].pid, 12);
        assert_eq!(
            holders[1].how,
            "mounts the share at /data in its own mount namespace"
        );
        assert_eq!(holders[0].pid, 10);
        assert_eq!(
            holders[0].to_string(),
            format!("pid 10 (sleep) has {mount_point}/f open")
        );
    }
}
