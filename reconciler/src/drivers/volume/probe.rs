//! What Volumes need from the host: the lvm2 tools, the kernel's device-mapper (logical
//! volumes are device-mapper targets), and `qemu-img` for volumes with a `source` image.

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

fn device_mapper() -> Facility {
    let module = Path::new("/sys/module/dm_mod").exists();
    let misc = std::fs::read_to_string("/proc/misc")
        .map(|misc| misc.lines().any(|line| line.ends_with(" device-mapper")))
        .unwrap_or(false);
    let control = Path::new("/dev/mapper/control").exists();
    if module || misc {
        let how = if module {
            "/sys/module/dm_mod"
        } else {
            "/proc/misc"
        };
        Facility::ok("device-mapper", format!("in the kernel ({how})"))
    } else if control {
        Facility::warn(
            "device-mapper",
            "/dev/mapper/control exists but the kernel lists no device-mapper",
            "load it: modprobe dm-mod",
        )
    } else {
        Facility::missing(
            "device-mapper",
            "not in this kernel: logical volumes cannot be created",
            "modprobe dm-mod, or boot a kernel with CONFIG_BLK_DEV_DM",
        )
    }
}
