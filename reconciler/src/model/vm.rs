//! `kind: VirtualMachine`: a KVM guest, run by QEMU (driven over QMP) or by gitvisor's own
//! microVM monitor (`builtin`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ByteSize, Duration, MacAddress, Name, RunState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    #[serde(default)]
    pub hypervisor: Hypervisor,
    /// Virtual CPUs.
    #[serde(default = "default_cpus")]
    #[schemars(range(min = 1, max = 255))]
    pub cpus: u32,
    /// Guest memory, e.g. `512MiB`.
    pub memory: ByteSize,
    pub boot: Boot,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Nic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<Console>,
    #[serde(default)]
    pub state: RunState,
    /// Hardware acceleration (qemu): `auto` uses KVM when `/dev/kvm` works, else TCG.
    #[serde(default)]
    pub accel: Accel,
    /// How long a graceful shutdown may take before the guest is stopped hard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,
}

fn default_cpus() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    #[default]
    Qemu,
    Builtin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Direct kernel boot (`kernel`, optional `initrd` and `cmdline`) or firmware boot
/// (`firmware`) from the first disk: exactly one of `kernel` and `firmware`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Boot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

/// A disk: exactly one of `volume` (a managed Volume) and `path` (an image file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Disk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub read_only: bool,
}

/// A network interface: a tap device enslaved to a managed Bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Nic {
    pub bridge: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
}

/// A NoCloud seed for cloud-init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudInit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<String>,
}

/// The serial console: a log file and an attachable unix socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Console {
    /// Where the serial output is written. Default: under the VM's runtime dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Expose an attachable socket (default true).
    #[serde(default = "super::bridge::default_true")]
    pub socket: bool,
}
