//! Rules about one resource on its own: the limits of the system it becomes (IFNAMSIZ,
//! LVM names, MTU range), one-of fields, addresses the kernel refuses or merges, and the
//! `gitvisor.dev/` annotations.

use crate::drivers::bridge::BridgeSpec;
use crate::drivers::container::{ContainerSpec, MAX_CONTAINER_CPUS, MAX_CONTAINER_MEMORY};
use crate::drivers::vm::{MAX_VM_MEMORY, VirtualMachineSpec};
use crate::drivers::volume::{MAX_VOLUME_SIZE, VolumeSpec};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{
    ADOPT_ANNOTATION, ByteSize, IFNAME_MAX, Kind, OVERCOMMIT_ANNOTATION, RESERVED_IFNAMES, quoted,
    unicast_problem,
};

/// The annotation prefix gitvisor owns: every key under it must be one it knows.
const ANNOTATION_PREFIX: &str = "gitvisor.dev/";
const KNOWN_ANNOTATIONS: [&str; 2] = [ADOPT_ANNOTATION, OVERCOMMIT_ANNOTATION];

pub(super) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    check_annotations(item, diagnostics);
    let resource = &item.resource;
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    let spec = &resource.spec;
    if let Some(bridge) = spec.get::<BridgeSpec>() {
        {
            let name = resource.metadata.name.as_str();
            if name.len() > IFNAME_MAX {
                error(
                    "metadata.name",
                    format!(
                        "a Bridge name is an interface name: at most {IFNAME_MAX} characters, {name:?} has {}",
                        name.len()
                    ),
                );
            }
            if RESERVED_IFNAMES.contains(&name) {
                error(
                    "metadata.name",
                    format!(
                        "a Bridge name is an interface name, and the kernel reserves {name:?} (/proc/sys/net/*/conf/{name})"
                    ),
                );
            }
            for (i, address) in bridge.addresses.iter().enumerate() {
                let field = format!("spec.addresses[{i}]");
                if let Some(problem) = address.interface_problem() {
                    error(&field, format!("cannot be a bridge address: {problem}"));
                }
                if let Some(j) = bridge.addresses[..i]
                    .iter()
                    .position(|a| a.addr() == address.addr())
                {
                    let first = &bridge.addresses[j];
                    let message = if first == address {
                        format!("duplicate address {address} (also spec.addresses[{j}])")
                    } else {
                        format!(
                            "address {} is already declared as {first} (spec.addresses[{j}]); an address has one prefix length, and the kernel would keep only one of them",
                            address.addr()
                        )
                    };
                    error(&field, message);
                }
            }
            for (i, port) in bridge.ports.iter().enumerate() {
                let field = format!("spec.ports[{i}]");
                if bridge.ports[..i].contains(port) {
                    error(&field, format!("duplicate port {port}"));
                }
                if port.as_str() == name {
                    error(&field, "a bridge cannot be its own port".into());
                }
                if port.as_str() == "lo" {
                    error(
                        &field,
                        "the loopback interface `lo` cannot be a bridge port (the kernel refuses it)"
                            .into(),
                    );
                }
            }
            if let Some(mtu) = bridge.mtu
                && !(68..=65535).contains(&mtu)
            {
                error("spec.mtu", format!("MTU {mtu} out of range 68-65535"));
            }
            super::network::check_bridge(name, bridge, &mut error);
            super::vlan::check_bridge(name, bridge, &mut error);
        }
    } else if let Some(volume) = spec.get::<VolumeSpec>() {
        {
            for (field, value) in [
                ("spec.volumeGroup", Some(&volume.volume_group)),
                ("spec.thinPool", volume.thin_pool.as_ref()),
            ] {
                if let Some(value) = value
                    && let Err(message) = check_lvm_name(value)
                {
                    error(field, message);
                }
            }
            if volume.size.bytes() == 0 {
                error("spec.size", "size must be greater than zero".into());
            }
            if volume.size.bytes() >= MAX_VOLUME_SIZE {
                error(
                    "spec.size",
                    format!(
                        "{} is more than LVM can make (a logical volume is smaller than 8 EiB)",
                        volume.size
                    ),
                );
            }
            check_volume_source(resource, volume, &mut error);
            let name = resource.metadata.name.as_str();
            if let Some(prefix) = ["snapshot", "pvmove"]
                .into_iter()
                .find(|prefix| name.starts_with(prefix))
            {
                error(
                    "metadata.name",
                    format!(
                        "a Volume's name is its logical volume's name, and LVM reserves names starting with {prefix:?}"
                    ),
                );
            }
            if let Err(message) = check_lvm_name(name) {
                error("metadata.name", message);
            }
        }
    } else if let Some(container) = spec.get::<ContainerSpec>() {
        {
            if container.image.trim().is_empty() {
                error("spec.image", "image must not be empty".into());
            } else if let Err(why) = crate::model::image_reference::check_image(&container.image) {
                error("spec.image", why);
            }
            if let Some(dir) = &container.working_dir
                && !dir.starts_with('/')
            {
                error(
                    "spec.workingDir",
                    format!(
                        "{} must be an absolute path inside the container",
                        quoted(dir)
                    ),
                );
            }
            if let Some(check) = &container.health_check {
                if check
                    .command
                    .first()
                    .is_none_or(|program| program.is_empty())
                {
                    error(
                        "spec.healthCheck.command",
                        "a health check needs a command: its first item is the program to run"
                            .into(),
                    );
                }
                for (field, value) in [("interval", check.interval), ("timeout", check.timeout)] {
                    if value.0.is_zero() {
                        error(
                            &format!("spec.healthCheck.{field}"),
                            format!("the {field} must be longer than 0s"),
                        );
                    }
                }
            }
            for key in container.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    error(
                        "spec.env",
                        format!("invalid environment variable name {}", quoted(key)),
                    );
                }
            }
            for (i, mount) in container.mounts.iter().enumerate() {
                if !mount.target.starts_with('/') {
                    error(
                        &format!("spec.mounts[{i}].target"),
                        "target must be an absolute path".into(),
                    );
                }
                if let Some(path) = &mount.host_path
                    && !path.starts_with('/')
                {
                    error(
                        &format!("spec.mounts[{i}].hostPath"),
                        format!("{} must be an absolute path on the host", quoted(path)),
                    );
                }
                if mount.volume.is_some() == mount.host_path.is_some() {
                    error(
                        &format!("spec.mounts[{i}]"),
                        "exactly one of `volume` and `hostPath` is required".into(),
                    );
                }
            }
            if let Some(network) = &container.network {
                if let Some(problem) = network.address.and_then(|a| a.interface_problem()) {
                    error(
                        "spec.network.address",
                        format!("cannot be a container address: {problem}"),
                    );
                }
                if let Some(problem) = network.gateway.and_then(unicast_problem) {
                    error(
                        "spec.network.gateway",
                        format!(
                            "cannot be a gateway: {} {problem}",
                            network.gateway.map(|g| g.to_string()).unwrap_or_default()
                        ),
                    );
                }
            }
            if let Some(resources) = &container.resources {
                if resources.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                    error(
                        "spec.resources.cpus",
                        "cpus must be a positive number".into(),
                    );
                } else if resources.cpus.is_some_and(|c| c > MAX_CONTAINER_CPUS) {
                    error(
                        "spec.resources.cpus",
                        format!("cpus must be at most {MAX_CONTAINER_CPUS} cores"),
                    );
                }
                match resources.memory.map(ByteSize::bytes) {
                    Some(0) => error(
                        "spec.resources.memory",
                        "memory: 0 is no limit to the runtime, and would never match the limit observed: remove `memory` for no limit, or give a size".into(),
                    ),
                    Some(bytes) if bytes > MAX_CONTAINER_MEMORY => error(
                        "spec.resources.memory",
                        format!(
                            "{} is more than the largest limit, {}",
                            ByteSize(bytes),
                            ByteSize(MAX_CONTAINER_MEMORY)
                        ),
                    ),
                    _ => {}
                }
                if resources.pids == Some(0) {
                    error(
                        "spec.resources.pids",
                        "pids: 0 is no limit to the runtime, and would never match the limit observed: remove `pids` for no limit, or give at least 1".into(),
                    );
                }
            }
        }
    } else if let Some(vm) = spec.get::<VirtualMachineSpec>() {
        {
            if vm.cpus == 0 || vm.cpus > 255 {
                error("spec.cpus", format!("cpus must be 1-255, not {}", vm.cpus));
            }
            if vm.memory.bytes() < (16 << 20) {
                error("spec.memory", "memory must be at least 16MiB".into());
            } else if vm.memory.bytes() > MAX_VM_MEMORY {
                error(
                    "spec.memory",
                    format!(
                        "{} is more than a guest may have, {}",
                        vm.memory,
                        ByteSize(MAX_VM_MEMORY)
                    ),
                );
            }
            let boot = &vm.boot;
            if boot.kernel.is_some() == boot.firmware.is_some() {
                error(
                    "spec.boot",
                    "exactly one of `kernel` (direct boot) and `firmware` is required".into(),
                );
            }
            if boot.firmware.is_some() && (boot.initrd.is_some() || boot.cmdline.is_some()) {
                error(
                    "spec.boot",
                    "`initrd` and `cmdline` need direct kernel boot (`kernel`)".into(),
                );
            }
            for (i, disk) in vm.disks.iter().enumerate() {
                if disk.volume.is_some() == disk.path.is_some() {
                    error(
                        &format!("spec.disks[{i}]"),
                        "exactly one of `volume` and `path` is required".into(),
                    );
                }
            }
            for (field, message) in vm.problems() {
                error(&field, message);
            }
        }
    }
}

/// Keys under `gitvisor.dev/` must be known, with values gitvisor understands.
fn check_annotations(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    for (key, value) in &item.resource.metadata.annotations {
        if !key.starts_with(ANNOTATION_PREFIX) {
            continue;
        }
        let mut field = String::from("metadata.annotations");
        crate::manifest::render_key(&mut field, key);
        if !KNOWN_ANNOTATIONS.contains(&key.as_str()) {
            diagnostics.push(item.key_diagnostic(
                &field,
                format!(
                    "unknown annotation {}: the {ANNOTATION_PREFIX} prefix is gitvisor's own, and it knows {}",
                    quoted(key),
                    KNOWN_ANNOTATIONS.join(", ")
                ),
            ));
        } else if value != "true" && value != "false" {
            diagnostics.push(item.diagnostic(
                &field,
                format!("{key} must be \"true\" or \"false\", not {}", quoted(value)),
            ));
        } else if key == OVERCOMMIT_ANNOTATION && item.resource.kind() != Kind::VirtualMachine {
            diagnostics.push(item.key_diagnostic(
                &field,
                format!("{OVERCOMMIT_ANNOTATION} is about a guest's memory: it applies to a VirtualMachine only"),
            ));
        }
    }
}

/// LVM's own rule for VG and LV names, checked before a name can reach a command line.
/// A source is written once into an empty volume: no filesystem is made over it, and a
/// snapshot lives where its origin does (another Volume, in that one's pool).
fn check_volume_source(
    resource: &crate::model::Resource,
    volume: &crate::drivers::volume::VolumeSpec,
    error: &mut impl FnMut(&str, String),
) {
    let Some(source) = &volume.source else {
        return;
    };
    if volume.filesystem.is_some() {
        error(
            "spec.filesystem",
            format!(
                "a volume with a source starts with the source's contents ({source}); making a filesystem would overwrite them: remove `filesystem` or `source`"
            ),
        );
    }
    if let Some(origin) = source.snapshot_of() {
        if origin.kind != crate::model::Kind::Volume {
            error(
                "spec.source.snapshotOf",
                format!("a snapshot is taken of a Volume, not of {origin}"),
            );
        } else if origin.name == resource.metadata.name {
            error(
                "spec.source.snapshotOf",
                "a volume cannot be a snapshot of itself".into(),
            );
        }
        if volume.thin_pool.is_some() {
            error(
                "spec.thinPool",
                "a snapshot lives where its origin does (a thin snapshot in the origin's pool): remove `thinPool`".into(),
            );
        }
    }
}

fn check_lvm_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid LVM name {}: use letters, digits and + _ . -, not starting with -",
            quoted(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_names() {
        assert!(check_lvm_name("vg0").is_ok());
        assert!(check_lvm_name("-vg").is_err());
        assert!(check_lvm_name("vg;rm").is_err());
    }
}
