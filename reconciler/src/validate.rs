//! Validate: the rules that span fields or documents, run after every document has
//! deserialised (which already checked names, sizes, CIDRs and unknown fields).
//!
//! In order: per-resource rules (kind-specific limits such as IFNAMSIZ, one-of fields),
//! duplicate names per kind, host selection globs, then references: a reference must name a
//! declared resource, and one applied on this host. Every finding becomes a [`Diagnostic`]
//! pointing at the offending field.

use std::collections::BTreeMap;

use globset::Glob;

use crate::load::{Diagnostic, LoadedResource};
use crate::model::{IFNAME_MAX, ResourceId, Spec};

/// Whether a resource with `metadata.host` = `selector` applies on `host`. No selector: every
/// host. A selector is a hostname or a glob (`nuc*`, `rack1-{a,b}`).
pub fn applies_to_host(selector: Option<&str>, host: &str) -> Result<bool, String> {
    match selector {
        None => Ok(true),
        Some(pattern) => Glob::new(pattern)
            .map(|glob| glob.compile_matcher().is_match(host))
            .map_err(|err| format!("invalid host glob {pattern:?}: {err}")),
    }
}

/// Checks `loaded`, appends findings to `diagnostics`, and returns the resources that apply
/// to `host`.
pub fn validate(
    loaded: &[LoadedResource],
    host: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<LoadedResource> {
    let mut declared: BTreeMap<ResourceId, &LoadedResource> = BTreeMap::new();
    let mut selected = Vec::new();
    for item in loaded {
        check_resource(item, diagnostics);
        let id = item.resource.id();
        if let Some(first) = declared.get(&id) {
            diagnostics.push(item.diagnostic(
                "metadata.name",
                format!(
                    "duplicate {id}: already declared at {}:{}",
                    first.resource.origin.file.display(),
                    first.resource.origin.line
                ),
            ));
            continue;
        }
        declared.insert(id, item);
        match applies_to_host(item.resource.metadata.host.as_deref(), host) {
            Ok(true) => selected.push(item.clone()),
            Ok(false) => {}
            Err(message) => diagnostics.push(item.diagnostic("metadata.host", message)),
        }
    }
    for item in &selected {
        for reference in item.resource.references() {
            match declared.get(&reference.target) {
                None => diagnostics.push(item.diagnostic(
                    &reference.path,
                    format!("references {} which is not declared", reference.target),
                )),
                Some(target) => {
                    let target_meta = &target.resource.metadata;
                    if !matches!(applies_to_host(target_meta.host.as_deref(), host), Ok(true)) {
                        diagnostics.push(item.diagnostic(
                            &reference.path,
                            format!(
                                "references {} which is declared for host {:?}, not this host ({host})",
                                reference.target,
                                target_meta.host.as_deref().unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
        }
    }
    selected
}

fn check_resource(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let resource = &item.resource;
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    match &resource.spec {
        Spec::Bridge(bridge) => {
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
            for (i, address) in bridge.addresses.iter().enumerate() {
                if bridge.addresses[..i].contains(address) {
                    error(
                        &format!("spec.addresses[{i}]"),
                        format!("duplicate address {address}"),
                    );
                }
            }
            for (i, port) in bridge.ports.iter().enumerate() {
                if bridge.ports[..i].contains(port) {
                    error(
                        &format!("spec.ports[{i}]"),
                        format!("duplicate port {port}"),
                    );
                }
                if port.as_str() == name {
                    error(
                        &format!("spec.ports[{i}]"),
                        "a bridge cannot be its own port".into(),
                    );
                }
            }
            if let Some(mtu) = bridge.mtu {
                if !(68..=65535).contains(&mtu) {
                    error("spec.mtu", format!("MTU {mtu} out of range 68-65535"));
                }
            }
        }
        Spec::Volume(volume) => {
            for (field, value) in [
                ("spec.volumeGroup", Some(&volume.volume_group)),
                ("spec.thinPool", volume.thin_pool.as_ref()),
            ] {
                if let Some(value) = value {
                    if let Err(message) = check_lvm_name(value) {
                        error(field, message);
                    }
                }
            }
            if volume.size.bytes() == 0 {
                error("spec.size", "size must be greater than zero".into());
            }
        }
        Spec::Container(container) => {
            if container.image.trim().is_empty() {
                error("spec.image", "image must not be empty".into());
            }
            for key in container.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    error(
                        "spec.env",
                        format!("invalid environment variable name {key:?}"),
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
                if mount.volume.is_some() == mount.host_path.is_some() {
                    error(
                        &format!("spec.mounts[{i}]"),
                        "exactly one of `volume` and `hostPath` is required".into(),
                    );
                }
            }
            if let Some(resources) = &container.resources {
                if resources.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                    error(
                        "spec.resources.cpus",
                        "cpus must be a positive number".into(),
                    );
                }
            }
        }
        Spec::VirtualMachine(vm) => {
            if vm.cpus == 0 || vm.cpus > 255 {
                error("spec.cpus", format!("cpus must be 1-255, not {}", vm.cpus));
            }
            if vm.memory.bytes() < (16 << 20) {
                error("spec.memory", "memory must be at least 16MiB".into());
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
            for (i, nic) in vm.networks.iter().enumerate() {
                if let Some(mac) = nic.mac {
                    if vm.networks[..i].iter().any(|n| n.mac == Some(mac)) {
                        error(
                            &format!("spec.networks[{i}].mac"),
                            format!("duplicate MAC {mac}"),
                        );
                    }
                }
            }
        }
    }
    for (i, dep) in resource.metadata.depends_on.iter().enumerate() {
        if *dep == resource.id() {
            error(
                &format!("metadata.dependsOn[{i}]"),
                "a resource cannot depend on itself".into(),
            );
        }
    }
}

/// LVM's own rule for VG and LV names, checked before a name can reach a command line.
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
            "invalid LVM name {name:?}: use letters, digits and + _ . -, not starting with -"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_globs() {
        assert!(applies_to_host(None, "a").unwrap());
        assert!(applies_to_host(Some("nuc*"), "nuc1").unwrap());
        assert!(!applies_to_host(Some("nuc*"), "pi1").unwrap());
        assert!(applies_to_host(Some("{a,b}"), "b").unwrap());
        assert!(applies_to_host(Some("[a"), "a").is_err());
    }

    #[test]
    fn lvm_names() {
        assert!(check_lvm_name("vg0").is_ok());
        assert!(check_lvm_name("-vg").is_err());
        assert!(check_lvm_name("vg;rm").is_err());
    }
}
