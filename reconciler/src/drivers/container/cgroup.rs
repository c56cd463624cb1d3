//! A container's limits as its cgroup has them (the truth, whatever changed them), read
//! from the files runc wrote below its cgroup ([`cgroup_path`](super::bundle::cgroup_path)):
//! under each v1 controller on hybrid and legacy hosts, in the one v2 hierarchy on
//! unified ones.
//!
//! A removed container's cgroup directories go with it ([`remove_dirs`]): runc removes
//! the container's own, but the `gitvisor/<scope>` directories above it stay behind
//! empty under every hierarchy unless something removes them. Only `rmdir` is used, which
//! the kernel refuses for a cgroup that still has children or processes, so a directory
//! another container (or another gitvisor) still uses is never touched.

use std::fs;
use std::path::Path;

use super::probe::{CgroupLayout, cgroup_layout};
use super::seam::Limits;

/// v1 reports "no memory limit" as the largest page-aligned counter value.
const V1_UNLIMITED: u64 = 1 << 62;

/// The container's limits, or `None` when it has no cgroup (it is not running, or the
/// cgroup file system is not mounted here).
pub fn limits(group: &str) -> Option<Limits> {
    limits_under(Path::new("/sys/fs/cgroup"), cgroup_layout()?, group)
}

/// The limits of cgroup `group` (`/gitvisor/…/ID`) in the hierarchy mounted at `root`.
pub fn limits_under(root: &Path, layout: CgroupLayout, group: &str) -> Option<Limits> {
    let group = group.trim_start_matches('/');
    let read = |path: &Path| fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    match layout {
        CgroupLayout::Unified => {
            let dir = root.join(group);
            let memory = read(&dir.join("memory.max"))?;
            let cpu = read(&dir.join("cpu.max"));
            let pids = read(&dir.join("pids.max"));
            Some(Limits {
                memory: memory.parse().ok(),
                cpus: cpu.and_then(|cpu| {
                    let (quota, period) = cpu.split_once(' ')?;
                    Some(quota.parse::<f64>().ok()? / period.parse::<f64>().ok()?)
                }),
                pids: pids.and_then(|p| p.parse().ok()),
            })
        }
        CgroupLayout::Hybrid | CgroupLayout::Legacy => {
            let memory: u64 = read(
                &root
                    .join("memory")
                    .join(group)
                    .join("memory.limit_in_bytes"),
            )?
            .parse()
            .ok()?;
            let cpu_dir = root.join("cpu").join(group);
            let quota: Option<i64> =
                read(&cpu_dir.join("cpu.cfs_quota_us")).and_then(|q| q.parse().ok());
            let period: Option<u64> =
                read(&cpu_dir.join("cpu.cfs_period_us")).and_then(|p| p.parse().ok());
            let pids = read(&root.join("pids").join(group).join("pids.max"));
            Some(Limits {
                memory: (memory < V1_UNLIMITED).then_some(memory),
                cpus: match (quota, period) {
                    (Some(quota), Some(period)) if quota > 0 && period > 0 => {
                        Some(quota as f64 / period as f64)
                    }
                    _ => None,
                },
                pids: pids.and_then(|p| p.parse().ok()),
            })
        }
    }
}

/// Removes the cgroup directories of container `group` (`/gitvisor/<scope>/<id>`) that
/// are empty, deepest first, under every hierarchy mounted below `/sys/fs/cgroup`: the
/// container's own, its scope's, and `gitvisor` itself. Best effort: a directory still in
/// use stays (the kernel refuses), and one that is already gone is fine.
pub fn remove_dirs(group: &str) {
    remove_dirs_under(Path::new("/sys/fs/cgroup"), group);
}

/// [`remove_dirs`] below `root`: `root` itself (a unified host's one hierarchy) and each
/// directory in it (a hybrid or legacy host's controllers; on a unified host those are
/// other cgroups, where `gitvisor/<scope>/<id>` is not found).
pub fn remove_dirs_under(root: &Path, group: &str) {
    let group = Path::new(group.trim_start_matches('/'));
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = fs::read_dir(root) {
        hierarchies.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    for hierarchy in hierarchies {
        let mut dir = Some(group);
        while let Some(relative) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let path = hierarchy.join(relative);
            match fs::remove_dir(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed an empty cgroup"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                // Still has children or processes: it and everything above it stay.
                Err(_) => break,
            }
            dir = relative.parent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, content: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn removing_a_containers_cgroup_dirs_keeps_what_another_still_uses() {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "memory/gitvisor/aaaa/web",
            "memory/gitvisor/aaaa/db",
            "pids/gitvisor/aaaa/web",
            "gitvisor/aaaa/web",
            "gitvisor/bbbb/web",
        ] {
            fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        remove_dirs_under(root.path(), "/gitvisor/aaaa/web");
        let exists = |dir: &str| root.path().join(dir).exists();
        assert!(!exists("memory/gitvisor/aaaa/web"));
        assert!(
            exists("memory/gitvisor/aaaa/db"),
            "another container's stays"
        );
        assert!(!exists("pids/gitvisor"), "an emptied gitvisor dir goes");
        assert!(
            !exists("gitvisor/aaaa"),
            "a unified hierarchy at the root too"
        );
        assert!(
            exists("gitvisor/bbbb/web"),
            "another gitvisor's scope stays"
        );
        remove_dirs_under(root.path(), "/gitvisor/aaaa/web");
    }

    #[test]
    fn v1_and_v2_files_read_the_same_limits() {
        let v1 = tempfile::tempdir().unwrap();
        write(
            v1.path(),
            "memory/gitvisor/web/memory.limit_in_bytes",
            "67108864\n",
        );
        write(v1.path(), "cpu/gitvisor/web/cpu.cfs_quota_us", "50000\n");
        write(v1.path(), "cpu/gitvisor/web/cpu.cfs_period_us", "100000\n");
        write(v1.path(), "pids/gitvisor/web/pids.max", "max\n");
        let limits = limits_under(v1.path(), CgroupLayout::Hybrid, "/gitvisor/web").unwrap();
        assert_eq!(
            limits,
            Limits {
                memory: Some(64 << 20),
                cpus: Some(0.5),
                pids: None
            }
        );

        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "gitvisor/web/memory.max", "max\n");
        write(v2.path(), "gitvisor/web/cpu.max", "max 100000\n");
        write(v2.path(), "gitvisor/web/pids.max", "20\n");
        let limits = limits_under(v2.path(), CgroupLayout::Unified, "/gitvisor/web").unwrap();
        assert_eq!(
            limits,
            Limits {
                memory: None,
                cpus: None,
                pids: Some(20)
            }
        );

        write(
            v1.path(),
            "memory/gitvisor/big/memory.limit_in_bytes",
            "9223372036854771712",
        );
        let limits = limits_under(v1.path(), CgroupLayout::Legacy, "/gitvisor/big").unwrap();
        assert_eq!(limits.memory, None);
        assert!(limits_under(v1.path(), CgroupLayout::Hybrid, "/gitvisor/absent").is_none());
    }
}
