//! What NFS needs from the host (`gitvisor doctor`): the kernel's NFS client (for
//! NfsMount) and server (`nfsd`, for exports), and Debian's `nfs-common` (`mount.nfs`)
//! and `nfs-kernel-server` (`rpc.nfsd`, `exportfs`), each with the fix.
//!
//! The kernel has a file system when `/proc/filesystems` lists it, or when its module is
//! on disk for the running kernel (`mount` loads it on first use). Only reads.

use std::path::Path;

use crate::drivers::probe::Facility;

/// The NfsMount kind's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let facilities = tokio::task::spawn_blocking(|| {
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let modules = Path::new("/lib/modules").join(release.trim()).join("kernel/fs");
        let module = |dir: &str, name: &str| {
            ["ko", "ko.xz", "ko.zst", "ko.gz"]
                .iter()
                .any(|ext| modules.join(dir).join(format!("{name}.{ext}")).exists())
        };
        let exists = |paths: &[&str]| paths.iter().any(|p| Path::new(p).exists());
        vec![
            kernel(
                "nfs-client",
                has_filesystem(&filesystems, "nfs4"),
                module("nfs", "nfsv4"),
                Facility::missing,
                "the kernel has no NFS client (CONFIG_NFS_FS, CONFIG_NFS_V4): NfsMounts cannot be mounted",
                "boot a kernel with the NFS client (Debian's linux-image-amd64 has it as modules: modprobe nfsv4)",
            ),
            kernel(
                "nfsd",
                has_filesystem(&filesystems, "nfsd"),
                module("nfsd", "nfsd"),
                Facility::warn,
                "the kernel has no NFS server (CONFIG_NFSD); only Volume exports need it",
                "boot a kernel with nfsd (Debian's linux-image-amd64 has it: modprobe nfsd)",
            ),
            if exists(&["/sbin/mount.nfs", "/usr/sbin/mount.nfs"]) {
                Facility::ok("nfs-common", "mount.nfs installed")
            } else {
                Facility::missing(
                    "nfs-common",
                    "mount.nfs is not installed: NfsMounts cannot be mounted",
                    "install nfs-common (Debian: apt install nfs-common)",
                )
            },
            if exists(&["/sbin/rpc.nfsd", "/usr/sbin/rpc.nfsd"])
                && exists(&["/sbin/exportfs", "/usr/sbin/exportfs"])
            {
                Facility::ok("nfs-kernel-server", "rpc.nfsd and exportfs installed")
            } else {
                Facility::warn(
                    "nfs-kernel-server",
                    "rpc.nfsd or exportfs is not installed; only Volume exports need them",
                    "install nfs-kernel-server (Debian: apt install nfs-kernel-server)",
                )
            },
        ]
    })
    .await;
    facilities.unwrap_or_else(|join| {
        vec![Facility::missing(
            "nfs",
            format!("the probe itself failed: {join}"),
            "report this as a gitvisor bug",
        )]
    })
}

/// Whether `/proc/filesystems` lists `name`.
fn has_filesystem(filesystems: &str, name: &str) -> bool {
    filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some(name))
}

fn kernel(
    name: &'static str,
    listed: bool,
    module: bool,
    absent: fn(&'static str, String, String) -> Facility,
    why: &str,
    fix: &str,
) -> Facility {
    match (listed, module) {
        (true, _) => Facility::ok(name, "in the kernel"),
        (false, true) => Facility::ok(name, "a module of this kernel (loaded on first use)"),
        (false, false) => absent(name, why.to_owned(), fix.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_is_listed_by_its_last_word_only() {
        let text = "nodev\tsysfs\nnodev\tnfs4\n\text4\n";
        assert!(has_filesystem(text, "nfs4"));
        assert!(has_filesystem(text, "ext4"));
        assert!(!has_filesystem(text, "nfs"));
        assert!(!has_filesystem(text, "nfsd"));
        let missing = kernel("nfsd", false, false, Facility::warn, "no", "fix");
        assert_eq!(missing.fix.as_deref(), Some("fix"));
        assert_eq!(
            kernel("nfsd", false, true, Facility::warn, "no", "f").fix,
            None
        );
    }
}
