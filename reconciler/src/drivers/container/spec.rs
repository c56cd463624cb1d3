//! `kind: Container`: an OCI container run by an OCI runtime (runc, or crun where the
//! host's cgroup layout allows).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{
    ByteSize, Cidr, Duration, Kind, KindSpec, Name, PortPublish, Reference, ResourceId, RunState,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerSpec {
    /// An OCI image layout directory, an OCI/docker archive tarball, or a rootfs directory.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a user name from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ContainerNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub state: RunState,
    /// How long a stop waits for the process to exit after SIGTERM before SIGKILL
    /// (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Duration>,
    /// A command run inside the container every `interval`; after `retries` failures in a
    /// row (past `startPeriod`) the container is unhealthy, stopped, and restarted under
    /// its `restartPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// The command and its arguments, run inside the container (no shell unless it names
    /// one); exit status 0 is healthy.
    pub command: Vec<String>,
    /// Time between checks (default 30s).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// How long one check may run before it counts as failed (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Consecutive failures that make the container unhealthy (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failures during this time after a start do not count (default 0s).
    #[serde(default = "default_start_period")]
    pub start_period: Duration,
}

fn default_interval() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

fn default_retries() -> u32 {
    3
}

fn default_start_period() -> Duration {
    Duration(std::time::Duration::ZERO)
}

/// A mount into the container: exactly one of `volume`, `hostPath` and `nfs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    /// A managed Volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Name>,
    /// A path on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// A managed NfsMount: its share (or `subPath` in it) is bind-mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<Name>,
    /// With `nfs`: a directory of the share (relative, no `..`) instead of all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerNetwork {
    /// The managed Bridge the container's veth is enslaved to.
    pub bridge: Name,
    /// The container's address, in CIDR form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Cidr>,
    /// Default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::IpAddr>,
    /// Ports of the container published on the host (destination NAT to `address`; the
    /// bridge needs `nat: true`). Changing them changes the bridge's rules only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PortPublish>,
    /// The VLANs the veth carries on the bridge (needs `vlanFiltering: true` there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<crate::model::Vlan>,
}

/// The largest CPU quota a container may declare, in cores (the kernel's CFS quota is
/// counted in microseconds per period; 1e300 cores is a typo, not a limit).
pub const MAX_CONTAINER_CPUS: f64 = 1024.0;
/// The largest memory limit a container may declare: 16 TiB, as for a guest.
pub const MAX_CONTAINER_MEMORY: u64 = 16 << 40;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPU quota in cores, e.g. 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// A container refers to the volumes and NFS shares it mounts and the bridge it joins.
impl KindSpec for ContainerSpec {
    const KIND: Kind = Kind::Container;

    fn references(&self) -> Vec<Reference> {
        let mut refs = Vec::new();
        for (i, m) in self.mounts.iter().enumerate() {
            if let Some(v) = &m.volume {
                refs.push(Reference {
                    target: ResourceId::new(Kind::Volume, v.clone()),
                    path: format!("spec.mounts[{i}].volume"),
                });
            }
            if let Some(share) = &m.nfs {
                refs.push(Reference {
                    target: ResourceId::new(Kind::NfsMount, share.clone()),
                    path: format!("spec.mounts[{i}].nfs"),
                });
            }
        }
        if let Some(net) = &self.network {
            refs.push(Reference {
                target: ResourceId::new(Kind::Bridge, net.bridge.clone()),
                path: "spec.network.bridge".into(),
            });
        }
        refs
    }
}
