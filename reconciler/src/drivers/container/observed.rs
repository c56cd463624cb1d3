//! What plan hands apply for one container ([`ObservedContainer`]): the container as the
//! runtime listed it, the declaration resolved against the revision (mount sources, the
//! veth, limits), and the work the drift calls for, in order.

use crate::drivers::bridge::BridgeSpec;
use crate::drivers::volume::VolumeSpec;
use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::etc_files::EtcFiles;
use super::seam::{
    ContainerMount, Limits, MANAGED_ANNOTATION, MountSource, RuntimeContainer, VethPlan,
};
use crate::contract::{Marker, PlanContext};
use crate::drivers::container::ContainerSpec;
use crate::drivers::vlan_port::{VlanDrift, declared_or_default};
use crate::model::{Kind, Name, Vlan};

/// The default grace between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the host end of a container's veth is called: `gvc` and 11 hex digits of the
/// name's SHA-256 (interface names have at most 15 bytes).
pub fn veth_name(container: &str) -> String {
    let hash = format!("{:x}", Sha256::digest(container.as_bytes()));
    format!("gvc{}", &hash[..11])
}

/// The `ifalias` of a container's host veth end.
pub fn veth_alias(container: &str) -> String {
    format!("gitvisor:container/{container}")
}

/// The containers under gitvisor's runtime root, by id, and the VLANs of bridge ports
/// by link name (read only when a declared container's bridge filters VLANs).
#[derive(Debug, Default)]
pub struct HostContainers {
    by_id: BTreeMap<String, RuntimeContainer>,
    port_vlans: BTreeMap<String, Vec<Vlan>>,
    host_resolver: String,
    /// gitvisor's state dir, under which NfsMounts without `path` are mounted.
    state_dir: std::path::PathBuf,
}

impl HostContainers {
    pub fn new(containers: Vec<RuntimeContainer>, port_vlans: BTreeMap<String, Vec<Vlan>>) -> Self {
        HostContainers {
            by_id: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
            port_vlans,
            host_resolver: String::new(),
            state_dir: std::path::PathBuf::from(crate::drivers::nfs_mount::DEFAULT_STATE_DIR),
        }
    }

    /// The same, with gitvisor's state dir (where NFS shares are mounted by default).
    pub fn with_state_dir(self, state_dir: std::path::PathBuf) -> Self {
        HostContainers { state_dir, ..self }
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The same, with the host's resolver configuration (read when a container is
    /// declared).
    pub fn with_host_resolver(self, host_resolver: String) -> Self {
        HostContainers {
            host_resolver,
            ..self
        }
    }

    /// The host's resolver configuration a container's `/etc/resolv.conf` starts from.
    pub fn host_resolver(&self) -> &str {
        &self.host_resolver
    }

    /// The VLANs of the bridge port `link` (a container's host veth end), if it is one.
    pub fn port_vlans(&self, link: &str) -> Option<&[Vlan]> {
        self.port_vlans.get(link).map(Vec::as_slice)
    }

    pub fn get(&self, id: &str) -> Option<&RuntimeContainer> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &RuntimeContainer> {
        self.by_id.values()
    }
}

/// Where the marker lives: the managed annotation, naming the container itself.
pub fn marker(container: &RuntimeContainer) -> Marker {
    match container.annotations.get(MANAGED_ANNOTATION) {
        Some(value) if *value == container.id => Marker::Ours,
        Some(value) => Marker::Foreign(value.clone()),
        None => Marker::Absent,
    }
}

/// One step of the work on a container, in the order apply carries them out.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Remove the container and everything gitvisor made for it.
    Remove,
    /// Create it afresh; start it when `start`.
    Create { start: bool },
    /// Delete the container and create it again with its writable layer, then start it.
    Restart,
    /// SIGTERM, then SIGKILL after the grace.
    Stop,
    /// New cgroup limits, in place.
    UpdateLimits(Limits),
    /// The host veth end's VLANs, in place.
    SetVlans(VlanDrift),
    /// `/etc/resolv.conf` with this text, in place.
    WriteResolvConf(String),
}

/// The declaration, resolved against the revision at plan time.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    pub spec: ContainerSpec,
    /// Mount sources, or why one cannot be mounted.
    pub mounts: Result<Vec<ContainerMount>, String>,
    pub veth: Option<VethPlan>,
    pub limits: Limits,
    pub grace: Duration,
    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
    pub etc_files: EtcFiles,
}

impl Declaration {
    /// `host_resolver`: the host's resolver configuration
    /// ([`HostContainers::host_resolver`]).
    pub fn resolve(
        name: &Name,
        spec: &ContainerSpec,
        context: &PlanContext,
        host_resolver: &str,
        state_dir: &std::path::Path,
    ) -> Self {
        Declaration {
            etc_files: EtcFiles::of(name.as_str(), spec.network.as_ref(), context, host_resolver),
            spec: spec.clone(),
            mounts: spec
                .mounts
                .iter()
                .map(|mount| resolve_mount(mount, context, state_dir))
                .collect(),
            veth: spec.network.as_ref().map(|network| VethPlan {
                host_name: veth_name(name.as_str()),
                alias: veth_alias(name.as_str()),
                bridge: network.bridge.as_str().to_owned(),
                address: network.address,
                gateway: network.gateway,
                vlans: filters_vlans(&network.bridge, context)
                    .then(|| declared_or_default(&network.vlans)),
            }),
            limits: declared_limits(spec),
            grace: spec
                .stop_timeout
                .map(|d| d.0)
                .unwrap_or(DEFAULT_STOP_TIMEOUT),
        }
    }
}

/// Whether the revision declares `bridge` with `vlanFiltering: true`.
pub(crate) fn filters_vlans(bridge: &Name, context: &PlanContext) -> bool {
    context
        .referenced(Kind::Bridge, bridge)
        .is_some_and(|declared| {
            declared
                .spec
                .get::<BridgeSpec>()
                .is_some_and(|b| b.vlan_filtering)
        })
}

fn resolve_mount(
    mount: &crate::drivers::container::Mount,
    context: &PlanContext,
    state_dir: &std::path::Path,
) -> Result<ContainerMount, String> {
    if let Some(share) = &mount.nfs {
        return Ok(ContainerMount {
            source: MountSource::Bind(nfs_source(mount, share, context, state_dir)?),
            target: mount.target.clone(),
            read_only: mount.read_only,
        });
    }
    let source = match (&mount.host_path, &mount.volume) {
        (Some(path), _) => {
            if !path.starts_with('/') {
                return Err(format!(
                    "mount {}: hostPath {path} must be an absolute path",
                    mount.target
                ));
            }
            MountSource::Bind(path.into())
        }
        (None, Some(volume)) => {
            let Some(declared) = context.referenced(Kind::Volume, volume) else {
                return Err(format!(
                    "mount {}: Volume {volume} is not declared",
                    mount.target
                ));
            };
            let Some(spec) = declared.spec.get::<VolumeSpec>() else {
                return Err(format!("mount {}: {volume} is not a Volume", mount.target));
            };
            if let crate::drivers::volume::Backing::File { directory, .. } = spec.backing() {
                return Err(format!(
                    "mount {}: Volume {volume} is a disk image file in {directory} (for a VM's disk); a container mounts an LVM Volume with a filesystem, or a host directory with hostPath",
                    mount.target
                ));
            }
            let Some(filesystem) = spec.filesystem else {
                return Err(format!(
                    "mount {}: Volume {volume} has no filesystem; give it `filesystem:` so the container can mount it",
                    mount.target
                ));
            };
            let fstype = serde_json::to_value(filesystem)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if fstype == "swap" {
                return Err(format!(
                    "mount {}: Volume {volume} is swap, which cannot be mounted",
                    mount.target
                ));
            }
            MountSource::Device {
                path: spec.path(volume.as_str()),
                fstype,
            }
        }
        (None, None) => {
            return Err(format!(
                "mount {}: needs `volume` or `hostPath`",
                mount.target
            ));
        }
    };
    Ok(ContainerMount {
        source,
        target: mount.target.clone(),
        read_only: mount.read_only,
    })
}

/// Where a mount of NfsMount `share` comes from: the share's mount point (the NfsMount
/// driver mounts it there before the container is created: the graph orders them), or
/// `subPath` below it.
fn nfs_source(
    mount: &crate::drivers::container::Mount,
    share: &Name,
    context: &PlanContext,
    state_dir: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let target = &mount.target;
    let Some(spec) = context
        .referenced(Kind::NfsMount, share)
        .and_then(|declared| {
            declared
                .spec
                .get::<crate::drivers::nfs_mount::NfsMountSpec>()
        })
    else {
        return Err(format!("mount {target}: NfsMount {share} is not declared"));
    };
    let root = spec.mount_path(share.as_str(), state_dir);
    match mount.sub_path.as_deref() {
        None => Ok(root),
        Some(sub) => {
            let path = std::path::Path::new(sub);
            let plain = path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if sub.is_empty() || !plain {
                return Err(format!(
                    "mount {target}: subPath {sub:?} must be a relative path inside the share, without `..`"
                ));
            }
            Ok(root.join(path))
        }
    }
}

/// The limits a declaration asks for (`None`: unlimited).
pub fn declared_limits(spec: &ContainerSpec) -> Limits {
    let resources = spec.resources.as_ref();
    Limits {
        memory: resources.and_then(|r| r.memory).map(|m| m.bytes()),
        cpus: resources.and_then(|r| r.cpus),
        pids: resources.and_then(|r| r.pids).map(u64::from),
    }
}

/// The snapshot one change carries from plan to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    /// The container as listed, when there is one.
    pub current: Option<RuntimeContainer>,
    /// The declaration (absent for deletes).
    pub declaration: Option<Declaration>,
    /// What apply does, in order.
    pub work: Vec<Work>,
}

impl ObservedContainer {
    /// The stop timeout recorded on the container when it was created, else the default.
    pub fn recorded_grace(&self) -> Duration {
        self.current
            .as_ref()
            .and_then(|c| c.annotations.get(super::seam::APPLIED_ANNOTATION))
            .and_then(|text| super::applied::AppliedSpec::parse(text).ok())
            .and_then(|applied| applied.stop_timeout)
            .map(|d| d.0)
            .unwrap_or(DEFAULT_STOP_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::container::testkit::declared;
    use crate::model::Spec;
    use crate::model::{Metadata, Resource};
    use std::path::Path;

    #[test]
    fn a_volume_mount_is_the_volumes_device_with_its_filesystem() {
        let volume = std::sync::Arc::new(Resource::new(
            Metadata::named(Name::parse("data").unwrap()),
            Spec::new::<VolumeSpec>(
                serde_yaml::from_str(
                    "volumeGroup: vg0
size: 1GiB
filesystem: ext4",
                )
                .unwrap(),
            ),
        ));
        let bare = std::sync::Arc::new(Resource::new(
            Metadata::named(Name::parse("raw").unwrap()),
            Spec::new::<VolumeSpec>(
                serde_yaml::from_str(
                    "volumeGroup: vg0
size: 1GiB",
                )
                .unwrap(),
            ),
        ));
        let web = declared(
            "web",
            "image: /i
mounts: [{target: /data, volume: data, readOnly: true}]",
        );
        let context = PlanContext::default().with_revision(&[volume, bare.clone()]);
        let Some(spec) = web.spec.get::<ContainerSpec>() else {
            unreachable!()
        };
        let declaration =
            Declaration::resolve(&web.metadata.name, spec, &context, "", Path::new("/s"));
        assert_eq!(
            declaration.mounts.unwrap(),
            [ContainerMount {
                source: MountSource::Device {
                    path: "/dev/vg0/data".into(),
                    fstype: "ext4".into()
                },
                target: "/data".into(),
                read_only: true,
            }]
        );
        let raw = declared(
            "web",
            "image: /i
mounts: [{target: /raw, volume: raw}]",
        );
        let Some(spec) = raw.spec.get::<ContainerSpec>() else {
            unreachable!()
        };
        let error = Declaration::resolve(&raw.metadata.name, spec, &context, "", Path::new("/s"))
            .mounts
            .unwrap_err();
        assert!(error.contains("has no filesystem"), "{error}");
    }

    #[test]
    fn an_nfs_mount_is_a_bind_of_the_shares_mount_point_or_a_directory_in_it() {
        let share = std::sync::Arc::new(Resource::new(
            Metadata::named(Name::parse("media").unwrap()),
            Spec::new::<crate::drivers::nfs_mount::NfsMountSpec>(
                serde_yaml::from_str("server: nas\nexport: /srv/media").unwrap(),
            ),
        ));
        let context = PlanContext::default().with_revision(&[share]);
        let resolve = |mounts: &str| {
            let web = declared("web", &format!("image: /i\nmounts: {mounts}"));
            let Some(spec) = web.spec.get::<ContainerSpec>() else {
                unreachable!()
            };
            Declaration::resolve(&web.metadata.name, spec, &context, "", Path::new("/s")).mounts
        };
        assert_eq!(
            resolve("[{target: /data, nfs: media, subPath: films/new, readOnly: true}]").unwrap(),
            [ContainerMount {
                source: MountSource::Bind("/s/nfs/media/films/new".into()),
                target: "/data".into(),
                read_only: true,
            }]
        );
        assert_eq!(
            resolve("[{target: /data, nfs: media}]").unwrap()[0].source,
            MountSource::Bind("/s/nfs/media".into())
        );
        let escape = resolve("[{target: /data, nfs: media, subPath: ../etc}]").unwrap_err();
        assert!(escape.contains("without `..`"), "{escape}");
        let undeclared = resolve("[{target: /data, nfs: other}]").unwrap_err();
        assert!(
            undeclared.contains("NfsMount other is not declared"),
            "{undeclared}"
        );
    }
}
