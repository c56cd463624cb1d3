//! What Containers need from the host: an OCI runtime that works with this host's cgroup
//! layout (`runc`, or `crun`, which refuses hybrid v1/v2 layouts), and cgroups.

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
    let (layout, runc, crun) = tokio::join!(
        blocking_layout(),
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
        None => Facility::missing(
            "cgroups",
            "/sys/fs/cgroup is not mounted",
            "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)",
        ),
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
