//! What Containers need from the host: an OCI runtime that works with this host's cgroup
//! layout (`runc`, or `crun`, which refuses hybrid v1/v2 layouts), and cgroups. When
//! `/sys/fs/cgroup` is empty because `ip netns exec` remounted `/sys`, doctor says that,
//! not "mount cgroup2": the host has cgroups, this process only cannot see them.

use crate::drivers::probe::{Facility, tool_version};

/// How `/sys/fs/cgroup` is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2 only.
    Unified,
    /// v1 controllers with v2 at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// v1 only.
    Legacy,
}

/// The Container kind's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let (layout, hidden_by_ip_netns_exec, runc, crun) = tokio::join!(
        blocking_layout(),
        blocking_netns_exec(),
        tool_version("runc", &["--version"]),
        tool_version("crun", &["--version"]),
    );
    let cgroups = match layout {
        Some(CgroupLayout::Unified) => Facility::ok("cgroups", "v2 (unified)"),
        Some(CgroupLayout::Hybrid) => Facility::warn(
            "cgroups",
            "hybrid v1/v2: runc works, crun refuses",
            "use runc, or boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2",
        ),
        Some(CgroupLayout::Legacy) => Facility::warn(
            "cgroups",
            "v1 (legacy) only",
            "use runc; cgroup v2 (systemd.unified_cgroup_hierarchy=1) is preferred",
        ),
        None => match hidden_by_ip_netns_exec {
            Some(namespace) => Facility::missing(
                "cgroups",
                format!(
                    "/sys/fs/cgroup is empty because gitvisor runs under `ip netns exec {namespace}`, which mounts a fresh /sys for the namespace without the cgroup hierarchy; the host's cgroups are fine, only hidden from this process"
                ),
                format!(
                    "run gitvisor in the host's namespaces, or enter the network namespace without remounting /sys: nsenter --net=/run/netns/{namespace} gitvisor …"
                ),
            ),
            None => Facility::missing(
                "cgroups",
                "/sys/fs/cgroup is not mounted",
                "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)",
            ),
        },
    };
    let crun_usable = crun.is_ok() && layout != Some(CgroupLayout::Hybrid);
    let runtime = match (&runc, &crun) {
        (Ok(runc), _) => {
            let also = match &crun {
                Ok(crun) if crun_usable => format!("; {crun} also usable"),
                Ok(crun) => format!("; {crun} refuses this cgroup layout"),
                Err(_) => String::new(),
            };
            Facility::ok("oci-runtime", format!("{runc} (preferred){also}"))
        }
        (Err(_), Ok(crun)) if crun_usable => Facility::ok("oci-runtime", crun.clone()),
        (Err(runc_error), Ok(crun)) => Facility::missing(
            "oci-runtime",
            format!("{runc_error}; {crun} refuses hybrid cgroups"),
            "install runc (Debian: apt install runc)",
        ),
        (Err(runc_error), Err(crun_error)) => Facility::missing(
            "oci-runtime",
            format!("{runc_error}; {crun_error}"),
            "install runc (Debian: apt install runc)",
        ),
    };
    let chosen = super::host::pick_runtime();
    let selection = match std::env::var_os("GITVISOR_OCI_RUNTIME").filter(|v| !v.is_empty()) {
        Some(_) => Facility::ok(
            "runtime",
            format!("{} (GITVISOR_OCI_RUNTIME)", chosen.display()),
        ),
        None => Facility::ok(
            "runtime",
            format!(
                "{} (automatic; set GITVISOR_OCI_RUNTIME to override)",
                chosen.display()
            ),
        ),
    };
    vec![runtime, selection, cgroups]
}

async fn blocking_layout() -> Option<CgroupLayout> {
    tokio::task::spawn_blocking(cgroup_layout)
        .await
        .ok()
        .flatten()
}

async fn blocking_netns_exec() -> Option<String> {
    tokio::task::spawn_blocking(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        ip_netns_exec_sysfs(&mountinfo)
    })
    .await
    .ok()
    .flatten()
}

/// The network namespace whose `/sys` this process sees, when `ip netns exec NAME`
/// mounted it: iproute2 mounts a fresh sysfs on `/sys` with the namespace's name as its
/// source (the host's says `sysfs`), and with it the cgroup mounts below disappear.
/// Read from `/proc/self/mountinfo`; the last mount on `/sys` is the one seen.
fn ip_netns_exec_sysfs(mountinfo: &str) -> Option<String> {
    let sys = mountinfo.lines().rev().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        let mount_point = mount.split_whitespace().nth(4)?;
        let mut filesystem = filesystem.split_whitespace();
        let (kind, source) = (filesystem.next()?, filesystem.next()?);
        (mount_point == "/sys").then(|| (kind.to_owned(), source.to_owned()))
    })?;
    match sys {
        (kind, source) if kind == "sysfs" && !["sysfs", "none"].contains(&source.as_str()) => {
            Some(source)
        }
        _ => None,
    }
}

/// The cgroup layout, from the file system types at `/sys/fs/cgroup` and below.
pub fn cgroup_layout() -> Option<CgroupLayout> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    let root = statfs("/sys/fs/cgroup").ok()?;
    if root.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Some(CgroupLayout::Unified);
    }
    if root.filesystem_type() != TMPFS_MAGIC {
        return None;
    }
    match statfs("/sys/fs/cgroup/unified") {
        Ok(unified) if unified.filesystem_type() == CGROUP2_SUPER_MAGIC => {
            Some(CgroupLayout::Hybrid)
        }
        _ => Some(CgroupLayout::Legacy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sys_mounted_by_ip_netns_exec_is_told_from_the_hosts() {
        let host = "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(ip_netns_exec_sysfs(host), None);
        let under = format!("{host}51 48 0:40 / /sys rw,relatime - sysfs gv-e2e-web rw\n");
        assert_eq!(ip_netns_exec_sysfs(&under).as_deref(), Some("gv-e2e-web"));
        assert_eq!(
            ip_netns_exec_sysfs("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
    }
}
