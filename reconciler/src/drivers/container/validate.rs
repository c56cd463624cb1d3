//! A Container's validation, reached through its registration: the rules of one
//! container on its own (an image reference that can be pulled, absolute paths inside
//! and outside it, one source per mount, a health check that can run, addresses and
//! limits the runtime accepts). Its address and published ports across the revision are
//! the bridge's rules (`drivers/network/validate`), since they are about the bridge's
//! link.

use super::{ContainerSpec, MAX_CONTAINER_CPUS, MAX_CONTAINER_MEMORY};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{ByteSize, quoted, unicast_problem};

/// The rules of one Container on its own; every finding goes to `diagnostics`.
pub(crate) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    let Some(container) = item.resource.spec.get::<ContainerSpec>() else {
        return;
    };
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
                "a health check needs a command: its first item is the program to run".into(),
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
        let sources = [
            mount.volume.is_some(),
            mount.host_path.is_some(),
            mount.nfs.is_some(),
        ];
        if sources.iter().filter(|given| **given).count() != 1 {
            error(
                &format!("spec.mounts[{i}]"),
                "exactly one of `volume`, `hostPath` and `nfs` is required".into(),
            );
        }
        if let Some(sub) = &mount.sub_path {
            let plain = std::path::Path::new(sub)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if mount.nfs.is_none() {
                error(
                    &format!("spec.mounts[{i}].subPath"),
                    "subPath is a directory of an NFS share: it goes with `nfs`".into(),
                );
            } else if sub.is_empty() || !plain {
                error(
                    &format!("spec.mounts[{i}].subPath"),
                    format!(
                        "{} must be a relative path inside the share, without `..`",
                        quoted(sub)
                    ),
                );
            }
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
