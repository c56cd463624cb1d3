//! What Volumes need from the host: the lvm2 tools, the kernel's device-mapper (logical
//! volumes are device-mapper targets), and `qemu-img` for volumes with a `source` image.
//!
//! Device-mapper is checked where the kernel lists its drivers (`/proc/misc`,
//! `/proc/devices`, `/sys/module/dm_mod`), not by `/dev/mapper/control`: a container or a
//! static `/dev` can carry that node on a kernel without device-mapper, and then every
//! `lvcreate` fails. The same check ([`kernel_lacks_device_mapper`]) serves `doctor` and
//! the driver's plan (through its report), so they cannot disagree.

use std::path::Path;

use crate::drivers::probe::{Facility, blocking, tool_version};

/// The Volume kind's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let lvm = match tool_version("lvm", &["version"]).await {
        Ok(version) => Facility::ok("lvm2", version),
        Err(error) => Facility::missing(
            "lvm2",
            error.to_string(),
            "install the lvm2 tools (Debian: apt install lvm2)",
        ),
    };
    let device_mapper = blocking("device-mapper", device_mapper).await;
    let qemu_img = match tool_version("qemu-img", &["--version"]).await {
        Ok(version) => Facility::ok("qemu-img", version),
        Err(error) => Facility::warn(
            "qemu-img",
            format!("{error}; only volumes with spec.source need it"),
            "install qemu-img (Debian: apt install qemu-utils) to write source images",
        ),
    };
    vec![lvm, device_mapper, qemu_img]
}

/// How to give the kernel device-mapper, said wherever it is missing.
pub const DEVICE_MAPPER_FIX: &str =
    "load it (modprobe dm-mod), or boot a kernel with CONFIG_BLK_DEV_DM (see docs/volumes.md)";

fn device_mapper() -> Facility {
    match kernel_lacks_device_mapper() {
        None => Facility::ok("device-mapper", "in the kernel"),
        Some(why) => Facility::missing("device-mapper", why, DEVICE_MAPPER_FIX),
    }
}

/// Why this kernel cannot make logical volumes, or `None` when it has device-mapper.
/// Blocking (reads `/proc` and `/sys`).
pub fn kernel_lacks_device_mapper() -> Option<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    lacks_device_mapper(
        &read("/proc/misc"),
        &read("/proc/devices"),
        Path::new("/sys/module/dm_mod").exists(),
        Path::new("/dev/mapper/control").exists(),
    )
}

/// [`kernel_lacks_device_mapper`] over the texts it reads.
fn lacks_device_mapper(
    misc: &str,
    devices: &str,
    module: bool,
    control_node: bool,
) -> Option<String> {
    let listed = |text: &str| {
        text.lines()
            .any(|line| line.split_whitespace().nth(1) == Some("device-mapper"))
    };
    if module || listed(misc) || listed(devices) {
        return None;
    }
    Some(if control_node {
        "the kernel has no device-mapper (neither /proc/misc nor /proc/devices lists it); /dev/mapper/control exists but is a node without a driver, so lvcreate would fail".into()
    } else {
        "the kernel has no device-mapper (neither /proc/misc nor /proc/devices lists it): logical volumes cannot be created".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_mapper_is_found_where_the_kernel_lists_it_and_not_by_its_node() {
        let misc = "236 device-mapper\n 60 vga_arbiter\n";
        let devices = "Block devices:\n254 device-mapper\n259 blkext\n";
        assert_eq!(lacks_device_mapper(misc, "", false, true), None);
        assert_eq!(lacks_device_mapper("", devices, false, false), None);
        assert_eq!(lacks_device_mapper("", "", true, false), None);
        // A node in /dev is not a driver in the kernel.
        let node_only = lacks_device_mapper(" 60 vga_arbiter\n", "Block devices:\n", false, true)
            .expect("no device-mapper");
        assert!(
            node_only.contains("/dev/mapper/control exists"),
            "{node_only}"
        );
        assert!(lacks_device_mapper("", "", false, false).is_some());
        // A name that only contains the word is not the driver.
        assert!(lacks_device_mapper("1 not-device-mapper\n", "", false, false).is_some());
    }
}
