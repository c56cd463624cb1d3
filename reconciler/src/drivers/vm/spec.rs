//! `kind: VirtualMachine`: a KVM guest, run by QEMU (driven over QMP) or by gitvisor's own
//! microVM monitor (`builtin`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{
    ByteSize, Duration, Kind, KindSpec, MacAddress, Name, PortPublish, Reference, ResourceId, Vlan,
};

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
    /// An ISO image attached as a CD-ROM (install media), on the q35 AHCI controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<String>,
    /// A screen for installers that need one: `vnc` serves it on a unix socket under the
    /// VM's run dir. Default `none`.
    #[serde(default, skip_serializing_if = "Graphics::is_none")]
    pub graphics: Graphics,
    /// `Running`, `Stopped` (ACPI powerdown, then a hard stop after `shutdownTimeout`) or
    /// `Paused` (the guest's vCPUs and clock stand still, its memory stays).
    #[serde(default)]
    pub state: VmState,
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
    /// gitvisor's own microVM monitor (`gitvisor-vmm`): direct kernel boot on KVM,
    /// virtio-mmio disks and NICs, no firmware, pause, display or CD-ROM.
    Builtin,
}

impl Hypervisor {
    pub fn as_str(self) -> &'static str {
        match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::Builtin => "builtin",
        }
    }
}

/// The most vCPUs `hypervisor: builtin` gives a guest (gitvisor-vmm's MP table).
pub const BUILTIN_MAX_CPUS: u32 = 32;
/// The most guest memory `hypervisor: builtin` maps (gitvisor-vmm's `MAX_MEMORY_MIB`).
pub const BUILTIN_MAX_MEMORY: u64 = 1 << 40;
/// The most memory any guest may declare: 16 TiB, more than the hosts gitvisor runs on
/// have; a larger value is a typo (`16383PiB` once passed validate). Whether this host
/// can back a guest is checked at plan time against its RAM and swap.
pub const MAX_VM_MEMORY: u64 = 16 << 40;
/// The most disks, NICs and cloud-init seed together under `hypervisor: builtin` (one
/// interrupt line of the IOAPIC each).
pub const BUILTIN_MAX_DEVICES: usize = 19;
/// What every Linux guest of `hypervisor: builtin` gets in its kernel command line
/// after gitvisor-vmm's own default boot arguments (no PCI probing, one UART, the
/// i8042's keyboard port only) and before the declared `cmdline`. Not `i8042.nopnp`:
/// on the VMM's hardware-reduced ACPI machine it makes the i8042 probe fail, and
/// Ctrl+Alt+Del with it.
pub const BUILTIN_BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// The boot arguments gitvisor-vmm puts first in every command line (its
/// `DEFAULT_BOOT_ARGS`, which a test holds this to).
pub const BUILTIN_VMM_BOOT_ARGS: &str =
    "pci=off 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd";
/// What a `hypervisor: builtin` guest's command line holds besides the declared
/// `cmdline`: [`BUILTIN_VMM_BOOT_ARGS`], then [`BUILTIN_BASE_CMDLINE`], each followed
/// by a space.
pub const BUILTIN_FIXED_CMDLINE: usize =
    BUILTIN_VMM_BOOT_ARGS.len() + 1 + BUILTIN_BASE_CMDLINE.len() + 1;
/// The longest kernel command line gitvisor-vmm passes (its 2 KiB area, less the
/// terminating NUL: `CMDLINE_MAX_SIZE` in `vmm/src/layout.rs`).
pub const BUILTIN_MAX_CMDLINE: usize = 2047;

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
    /// The image format of a `path` disk. Default: `qcow2` when the path ends in
    /// `.qcow2`, else `raw`; never guessed from the content (a guest could write a
    /// qcow2 header into a raw disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
}

impl Disk {
    /// The format QEMU opens the disk with: declared, else from a `path`'s extension;
    /// a Volume's format comes from the Volume (`Launch::resolve`), this is raw for it.
    pub fn effective_format(&self) -> DiskFormat {
        match (self.format, &self.path) {
            (Some(format), _) => format,
            (None, Some(path)) if path.ends_with(".qcow2") => DiskFormat::Qcow2,
            _ => DiskFormat::Raw,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The desired run state of a virtual machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum VmState {
    #[default]
    Running,
    Stopped,
    /// Frozen in memory: vCPUs stopped, as `virsh suspend` does.
    Paused,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "Running",
            VmState::Stopped => "Stopped",
            VmState::Paused => "Paused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    #[default]
    None,
    /// VNC on a unix socket under the VM's run dir (`vnc.sock`).
    Vnc,
}

impl Graphics {
    pub fn is_none(&self) -> bool {
        *self == Graphics::None
    }
}

/// A network interface: a tap device enslaved to a managed Bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Nic {
    pub bridge: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
    /// Ports of the guest published on the host (destination NAT to the static DHCP
    /// lease the bridge declares for `mac`; the bridge needs `nat: true`). Changing them
    /// changes the bridge's rules only, not the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PortPublish>,
    /// The VLANs the tap carries on the bridge (needs `vlanFiltering: true` there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<Vlan>,
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
    #[serde(default = "default_true")]
    pub socket: bool,
}

/// The most disks and network interfaces one VM may declare (each is a PCI device; a tap
/// name carries the NIC's index in at most two digits).
pub const MAX_VM_DEVICES: usize = 32;

impl VirtualMachineSpec {
    /// Rules about this spec on its own that the schema cannot say, as
    /// `(field path, message)`: every path that reaches QEMU's command line is absolute
    /// and printable (no NUL, no control characters), a kernel command line is one line,
    /// device counts are bounded. (MAC addresses are checked across the revision by
    /// the validator's uniqueness rules.)
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut path = |field: String, value: &Option<String>| {
            if let Some(value) = value
                && let Some(problem) = path_problem(value)
            {
                problems.push((field, problem));
            }
        };
        path("spec.boot.kernel".into(), &self.boot.kernel);
        path("spec.boot.initrd".into(), &self.boot.initrd);
        path("spec.cdrom".into(), &self.cdrom);
        if let Some(console) = &self.console {
            path("spec.console.log".into(), &console.log);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            path(format!("spec.disks[{i}].path"), &disk.path);
        }
        if let Some(cmdline) = &self.boot.cmdline
            && cmdline.chars().any(char::is_control)
        {
            problems.push((
                "spec.boot.cmdline".into(),
                "the kernel command line must be one line without control characters".into(),
            ));
        }
        for (field, count) in [
            ("spec.disks", self.disks.len()),
            ("spec.networks", self.networks.len()),
        ] {
            if count > MAX_VM_DEVICES {
                problems.push((
                    field.into(),
                    format!("at most {MAX_VM_DEVICES} are supported, {count} are declared"),
                ));
            }
        }
        if self
            .disks
            .iter()
            .any(|d| d.volume.is_some() && d.format == Some(DiskFormat::Qcow2))
        {
            problems.push((
                "spec.disks".into(),
                "a `volume` disk opens in the Volume's own format (raw for LVM, the Volume's spec.format for a file volume); `format` applies to `path` disks only".into(),
            ));
        }
        if self.hypervisor == Hypervisor::Builtin {
            problems.extend(self.builtin_problems());
        }
        problems
    }

    /// What `hypervisor: builtin` cannot do of this spec, as `(field path, message)`:
    /// gitvisor-vmm boots a kernel directly on KVM, with raw virtio-mmio disks and NICs
    /// and a serial console; it has no firmware, TCG, pause, display or CD-ROM.
    pub fn builtin_problems(&self) -> Vec<(String, String)> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut refuse = |field: &str, message: &str| {
            problems.push((field.to_owned(), format!("hypervisor: builtin {message}")));
        };
        if self.boot.firmware.is_some() {
            refuse(
                "spec.boot.firmware",
                "has no firmware: boot a kernel directly (boot.kernel), or use hypervisor: qemu",
            );
        }
        if self.accel == Accel::Tcg {
            refuse(
                "spec.accel",
                "runs on KVM only: declare accel: auto or kvm, or use hypervisor: qemu for TCG",
            );
        }
        if self.state == VmState::Paused {
            refuse(
                "spec.state",
                "cannot pause a guest: declare Running or Stopped, or use hypervisor: qemu",
            );
        }
        if self.graphics != Graphics::None {
            refuse(
                "spec.graphics",
                "has no display: remove graphics and use the serial console (gitvisor console)",
            );
        }
        if self.cdrom.is_some() {
            refuse(
                "spec.cdrom",
                "has no CD-ROM: attach the image as a disk with readOnly: true",
            );
        }
        if let Some(cmdline) = self.boot.cmdline.as_deref() {
            let length = BUILTIN_FIXED_CMDLINE + cmdline.len();
            if length > BUILTIN_MAX_CMDLINE {
                let room = BUILTIN_MAX_CMDLINE - BUILTIN_FIXED_CMDLINE;
                refuse(
                    "spec.boot.cmdline",
                    &format!(
                        "takes a command line of at most {room} bytes (it adds {BUILTIN_FIXED_CMDLINE} of its own); this one has {}: shorten it",
                        cmdline.len()
                    ),
                );
            }
        }
        if self.memory.bytes() > BUILTIN_MAX_MEMORY {
            refuse(
                "spec.memory",
                &format!(
                    "maps at most {} of guest memory",
                    crate::model::ByteSize(BUILTIN_MAX_MEMORY)
                ),
            );
        }
        if self.cpus > BUILTIN_MAX_CPUS {
            refuse(
                "spec.cpus",
                &format!("gives a guest at most {BUILTIN_MAX_CPUS} vCPUs"),
            );
        }
        for (i, disk) in self.disks.iter().enumerate() {
            if disk.effective_format() != DiskFormat::Raw {
                refuse(
                    &format!("spec.disks[{i}]"),
                    "opens raw images and block devices only: convert the image (qemu-img convert -O raw) and declare format: raw",
                );
            }
            if disk.path.as_deref().is_some_and(|p| p.contains(',')) {
                refuse(
                    &format!("spec.disks[{i}].path"),
                    "cannot open a path with a comma (gitvisor-vmm's --disk option has no escaping): rename the file",
                );
            }
        }
        let devices =
            self.disks.len() + self.networks.len() + usize::from(self.cloud_init.is_some());
        if devices > BUILTIN_MAX_DEVICES {
            refuse(
                "spec.disks",
                &format!(
                    "has room for {BUILTIN_MAX_DEVICES} disks, NICs and cloud-init seed together; {devices} are declared"
                ),
            );
        }
        problems
    }
}

/// Why `path` cannot be handed to a hypervisor, if it cannot.
fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path:?} must be an absolute path"));
    }
    if path.chars().any(char::is_control) {
        return Some(format!("{path:?} contains a control character"));
    }
    None
}

/// A VM refers to the volumes of its disks and the bridges of its networks.
impl KindSpec for VirtualMachineSpec {
    const KIND: Kind = Kind::VirtualMachine;

    fn references(&self) -> Vec<Reference> {
        let mut refs = Vec::new();
        for (i, d) in self.disks.iter().enumerate() {
            if let Some(v) = &d.volume {
                refs.push(Reference {
                    target: ResourceId::new(Kind::Volume, v.clone()),
                    path: format!("spec.disks[{i}].volume"),
                });
            }
        }
        for (i, n) in self.networks.iter().enumerate() {
            refs.push(Reference {
                target: ResourceId::new(Kind::Bridge, n.bridge.clone()),
                path: format!("spec.networks[{i}].bridge"),
            });
        }
        refs
    }
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> VirtualMachineSpec {
        serde_yaml::from_str(yaml).expect("test spec parses")
    }

    #[test]
    fn paths_must_be_absolute_and_printable() {
        let vm = spec(
            "memory: 256MiB\nboot: {kernel: vmlinuz, cmdline: \"a\\nb\"}\n\
             disks: [{path: \"/x\\u0001\"}, {volume: data, format: qcow2}]\n\
             networks: [{bridge: br0, mac: \"52:54:00:00:00:01\"}, {bridge: br0, mac: \"52:54:00:00:00:01\"}]",
        );
        let fields: Vec<String> = vm.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.boot.kernel",
                "spec.disks[0].path",
                "spec.boot.cmdline",
                "spec.disks"
            ]
        );
        let good = spec("memory: 256MiB\nboot: {kernel: /boot/vmlinuz, cmdline: console=ttyS0}");
        assert!(good.problems().is_empty());
    }

    #[test]
    fn builtin_takes_a_command_line_that_fits_gitvisor_vmm_with_its_own_part() {
        let room = BUILTIN_MAX_CMDLINE - BUILTIN_FIXED_CMDLINE;
        let with = |length: usize| {
            spec(&format!(
                "hypervisor: builtin\nmemory: 64MiB\nboot: {{kernel: /boot/vmlinux, cmdline: {}}}",
                "x".repeat(length)
            ))
            .builtin_problems()
        };
        assert!(with(room).is_empty());
        let refused = with(room + 1);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, "spec.boot.cmdline");
        assert!(
            refused[0].1.contains(&format!("at most {room} bytes")),
            "{refused:?}"
        );
    }

    #[test]
    fn builtin_refuses_what_gitvisor_vmm_cannot_do_field_by_field() {
        let vm = spec(
            "hypervisor: builtin\nmemory: 256MiB\ncpus: 33\naccel: tcg\nstate: Paused\n\
             boot: {firmware: uefi}\ngraphics: vnc\ncdrom: /i.iso\n\
             disks: [{path: /a.qcow2}, {path: \"/b,c.img\"}, {volume: data}]",
        );
        let fields: Vec<String> = vm.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.boot.firmware",
                "spec.accel",
                "spec.state",
                "spec.graphics",
                "spec.cdrom",
                "spec.cpus",
                "spec.disks[0]",
                "spec.disks[1].path",
            ]
        );
        assert!(
            vm.problems()
                .iter()
                .all(|(_, m)| m.starts_with("hypervisor: builtin "))
        );
        let crowded = spec(&format!(
            "hypervisor: builtin\nmemory: 256MiB\nboot: {{kernel: /k}}\ncloudInit: {{userData: x}}\n\
             disks: [{}]\nnetworks: [{{bridge: br0}}, {{bridge: br0}}]",
            vec!["{path: /d.img}"; 17].join(", ")
        ));
        let problems = crowded.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.contains("20 are declared"), "{problems:?}");
        let good = spec(
            "hypervisor: builtin\nmemory: 64MiB\ncpus: 32\nboot: {kernel: /k}\n\
             disks: [{path: /a.img}, {volume: v, readOnly: true}]\nnetworks: [{bridge: br0}]",
        );
        assert_eq!(good.problems(), Vec::new());
        let qemu = spec("memory: 64MiB\naccel: tcg\nstate: Paused\nboot: {firmware: uefi}");
        assert_eq!(qemu.problems(), Vec::new(), "QEMU can do all of it");
    }

    #[test]
    fn a_disk_format_comes_from_the_declaration_or_the_extension() {
        let disk = |yaml: &str| serde_yaml::from_str::<Disk>(yaml).expect("disk parses");
        assert_eq!(disk("path: /a.qcow2").effective_format(), DiskFormat::Qcow2);
        assert_eq!(disk("path: /a.img").effective_format(), DiskFormat::Raw);
        assert_eq!(
            disk("{path: /a.img, format: qcow2}").effective_format(),
            DiskFormat::Qcow2
        );
        assert_eq!(disk("volume: data").effective_format(), DiskFormat::Raw);
    }
}
