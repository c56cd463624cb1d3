//! The OCI runtime `config.json` of a container, generated with `oci-spec` from its
//! [`ContainerConfig`]. Pure: the caller resolves the user and writes the file.
//!
//! The defaults are those other engines use: new pid, network, ipc, uts, mount and cgroup
//! namespaces; `/proc`, `/dev` (tmpfs), `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys`
//! (read-only) and `/sys/fs/cgroup` (read-only); the runtime's masked and read-only
//! paths; Docker's default capability set (which includes `NET_RAW`, so `ping` works)
//! and `no_new_privileges`. Only portable fields are used, so any OCI runtime can run the
//! bundle. The container's cgroup is `/gitvisor/<scope>/<id>` ([`cgroup_path`]), so its
//! limits are found at a known place under every controller.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, UserBuilder, get_default_maskedpaths, get_default_mounts, get_default_namespaces,
    get_default_readonly_paths,
};

use super::etc_files;
use super::seam::{ContainerConfig, MountSource};

/// The cgroup (below every controller's root) of container `id` under the runtime root
/// `root`: `/gitvisor/<8 hex digits of the root's path hash>/<id>`. The runtime root
/// scopes container names, so two gitvisors on one host (another `--run-dir`) never
/// share a cgroup.
pub fn cgroup_path(root: &std::path::Path, id: &str) -> String {
    use sha2::Digest;
    let hash = format!(
        "{:x}",
        sha2::Sha256::digest(root.as_os_str().as_encoded_bytes())
    );
    format!("/gitvisor/{}/{id}", &hash[..8])
}

/// The CFS period gitvisor sets with a CPU quota: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The user the process runs as, resolved against the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
}

/// Docker's default capabilities.
fn capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// The runtime spec of `config`, its process running as `user`, in the cgroup `cgroup`;
/// `bundle` is the bundle's directory, which holds the files bind-mounted on `/etc`
/// ([`super::etc_files`]).
pub fn render(
    config: &ContainerConfig,
    user: ResolvedUser,
    cgroup: &str,
    bundle: &Path,
) -> Result<Spec, String> {
    let invalid = |what: &str, e: oci_spec::OciSpecError| format!("{what}: {e}");
    let caps = capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(|e| invalid("capabilities", e))?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(config.args.clone())
        .env(config.env.clone())
        .cwd(PathBuf::from(&config.cwd))
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .build()
                .map_err(|e| invalid("user", e))?,
        )
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(|e| invalid("process", e))?;

    let mut mounts = get_default_mounts();
    // Before the declared mounts, so a declared mount on /etc (or on one of these
    // files) is laid over them, as the declaration asks.
    for (file, target) in etc_files::MOUNTED {
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(target))
                .typ("bind")
                .source(bundle.join(file))
                .options(vec!["rbind".to_owned(), "rprivate".to_owned()])
                .build()
                .map_err(|e| invalid("mount", e))?,
        );
    }
    for mount in &config.mounts {
        mounts.push(mount_of(mount).map_err(|e| invalid("mount", e))?);
    }

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(memory) = config.limits.memory {
        let bytes =
            i64::try_from(memory).map_err(|_| format!("memory limit {memory} is out of range"))?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .build()
                .map_err(|e| invalid("memory", e))?,
        );
    }
    if let Some(cpus) = config.limits.cpus {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(cpu_quota(cpus))
                .period(CPU_PERIOD_US)
                .build()
                .map_err(|e| invalid("cpu", e))?,
        );
    }
    if let Some(pids) = config.limits.pids {
        let limit =
            i64::try_from(pids).map_err(|_| format!("pids limit {pids} is out of range"))?;
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(|e| invalid("pids", e))?,
        );
    }
    let linux = LinuxBuilder::default()
        .cgroups_path(PathBuf::from(cgroup))
        .namespaces(get_default_namespaces())
        .resources(resources.build().map_err(|e| invalid("resources", e))?)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .map_err(|e| invalid("linux", e))?;

    let mut spec = Spec::default();
    spec.set_hostname(Some(config.id.clone()));
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .map_err(|e| invalid("root", e))?,
    ));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(Some(
        config
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
    ));
    Ok(spec)
}

/// The CFS quota in microseconds per [`CPU_PERIOD_US`] for `cpus` cores (at least 1 ms,
/// the kernel's minimum).
pub fn cpu_quota(cpus: f64) -> i64 {
    ((cpus * CPU_PERIOD_US as f64).round() as i64).max(1000)
}

fn mount_of(mount: &super::seam::ContainerMount) -> Result<Mount, oci_spec::OciSpecError> {
    let access = if mount.read_only { "ro" } else { "rw" };
    match &mount.source {
        MountSource::Bind(path) => MountBuilder::default()
            .destination(PathBuf::from(&mount.target))
            .typ("bind")
            .source(path.clone())
            .options(vec![
                "rbind".to_owned(),
                "rprivate".to_owned(),
                access.to_owned(),
            ])
            .build(),
        MountSource::Device { path, fstype } => MountBuilder::default()
            .destination(PathBuf::from(&mount.target))
            .typ(fstype.clone())
            .source(path.clone())
            .options(vec![
                access.to_owned(),
                "nosuid".to_owned(),
                "nodev".to_owned(),
            ])
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::drivers::container::seam::{ContainerMount, Limits};

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "web".into(),
            args: vec!["sleep".into(), "100".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/srv".into(),
            user: None,
            mounts: vec![ContainerMount {
                source: MountSource::Bind("/data".into()),
                target: "/data".into(),
                read_only: true,
            }],
            limits: Limits {
                memory: Some(64 << 20),
                cpus: Some(0.5),
                pids: Some(50),
            },
            annotations: BTreeMap::from([("gitvisor.dev/managed".into(), "web".into())]),
            health: None,
            etc_files: Default::default(),
        }
    }

    #[test]
    fn the_runtime_config_carries_process_mounts_limits_and_marker() {
        let cgroup = cgroup_path(std::path::Path::new("/run/gitvisor/runc"), "web");
        assert!(cgroup.starts_with("/gitvisor/") && cgroup.ends_with("/web"));
        assert_ne!(
            cgroup,
            cgroup_path(std::path::Path::new("/tmp/other"), "web")
        );
        let user = ResolvedUser {
            uid: 1000,
            gid: 100,
        };
        let bundle = Path::new("/run/gitvisor/containers/web");
        let spec = render(&config(), user, &cgroup, bundle).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["args"], serde_json::json!(["sleep", "100"]));
        assert_eq!(json["process"]["cwd"], "/srv");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["terminal"], false);
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["hostname"], "web");
        assert_eq!(json["linux"]["cgroupsPath"], cgroup.as_str());
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 50);
        assert_eq!(json["annotations"]["gitvisor.dev/managed"], "web");
        let mounts = json["mounts"].as_array().unwrap();
        let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["type"], "bind");
        assert!(data["options"].as_array().unwrap().contains(&"ro".into()));
        for (file, target) in [
            ("hosts", "/etc/hosts"),
            ("hostname", "/etc/hostname"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let mount = mounts.iter().find(|m| m["destination"] == target).unwrap();
            assert_eq!(mount["type"], "bind");
            assert_eq!(
                mount["source"],
                format!("/run/gitvisor/containers/web/{file}")
            );
        }
        let namespaces: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_owned())
            .collect();
        assert!(namespaces.contains(&"network".to_owned()));
        assert!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .contains(&"CAP_NET_RAW".into())
        );
    }
}
