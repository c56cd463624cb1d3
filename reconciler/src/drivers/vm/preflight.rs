//! Plan-time checks of the files a VM's launch opens: kernel, initrd, disk images (and
//! their format), the installer ISO.
//!
//! # Why
//!
//! QEMU only finds out at launch that a declared file is missing or is not what the
//! manifest says. For a restart that is too late: the old guest has been powered off
//! by then, and stays down. So the plan asks the host about every declared path in one
//! batch ([`super::VmHost::inspect`]: stat and the first bytes) and [`refusals`] turns
//! what stands in the way into findings on the field that declares it; the plan refuses
//! the VM (`? unsupported`, pointing at `file:line:col: field`), and apply checks again
//! just before it stops a guest for a restart.
//!
//! Pure: the host's answers come in as [`FileFact`]s. A disk taken from a `Volume` is
//! not checked: the Volume may be created by this same apply.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::drivers::vm::{DiskFormat, VirtualMachineSpec};

/// The magic bytes a qcow2 image starts with.
pub const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// What the host says about one declared path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFact {
    Missing,
    /// A directory, or something else that is not a file or a block device.
    NotAFile,
    /// It exists but could not be opened or read: why.
    Unreadable(String),
    /// A file or block device; whether it starts with the qcow2 magic.
    File {
        qcow2: bool,
    },
}

/// The host's answers, by path.
pub type FileFacts = BTreeMap<PathBuf, FileFact>;

/// One thing a launch would open, and the field that declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Needed {
    field: String,
    path: PathBuf,
    /// The format a disk is opened with, and the field that says so (`format`, or the
    /// `path` whose extension implied it).
    format: Option<(DiskFormat, String)>,
}

fn needed(spec: &VirtualMachineSpec) -> Vec<Needed> {
    let file = |field: &str, path: &str| Needed {
        field: field.to_owned(),
        path: PathBuf::from(path),
        format: None,
    };
    let mut needed = Vec::new();
    if let Some(kernel) = &spec.boot.kernel {
        needed.push(file("spec.boot.kernel", kernel));
    }
    if let Some(initrd) = &spec.boot.initrd {
        needed.push(file("spec.boot.initrd", initrd));
    }
    for (index, disk) in spec.disks.iter().enumerate() {
        let Some(path) = &disk.path else { continue };
        let field = format!("spec.disks[{index}].path");
        let format_field = match disk.format {
            Some(_) => format!("spec.disks[{index}].format"),
            None => field.clone(),
        };
        needed.push(Needed {
            format: Some((disk.effective_format(), format_field)),
            ..file(&field, path)
        });
    }
    if let Some(cdrom) = &spec.cdrom {
        needed.push(file("spec.cdrom", cdrom));
    }
    needed
}

/// Every path `spec`'s launch opens, for the host to inspect.
pub fn paths(spec: &VirtualMachineSpec) -> Vec<PathBuf> {
    needed(spec).into_iter().map(|n| n.path).collect()
}

/// A finding about one field: what is wrong on this host, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

/// What in `spec` cannot be opened as declared on a host that answered `facts` (a path
/// the host was not asked about is not judged).
pub fn refusals(spec: &VirtualMachineSpec, facts: &FileFacts) -> Vec<Refusal> {
    let mut found = Vec::new();
    for need in needed(spec) {
        let Some(fact) = facts.get(&need.path) else {
            continue;
        };
        let shown = need.path.display();
        let (field, message) = match (fact, &need.format) {
            (FileFact::Missing, _) => (
                need.field,
                format!("{shown} does not exist on this host; put the file there or fix the path"),
            ),
            (FileFact::NotAFile, _) => (
                need.field,
                format!("{shown} is not a file; name the file itself"),
            ),
            (FileFact::Unreadable(why), _) => (
                need.field,
                format!("{shown} cannot be read by gitvisor: {why}; fix its permissions"),
            ),
            (FileFact::File { qcow2: true }, Some((DiskFormat::Raw, field))) => (
                field.clone(),
                format!(
                    "{shown} is a qcow2 image, but the disk would be opened as raw (the guest would see qcow2's metadata, not the disk); declare format: qcow2"
                ),
            ),
            (FileFact::File { qcow2: false }, Some((DiskFormat::Qcow2, field))) => (
                field.clone(),
                format!(
                    "{shown} is not a qcow2 image (it does not start with qcow2's magic); declare format: raw, or convert it with qemu-img convert -O qcow2"
                ),
            ),
            (FileFact::File { .. }, _) => continue,
        };
        found.push(Refusal { field, message });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> VirtualMachineSpec {
        serde_yaml::from_str(yaml).expect("test spec parses")
    }

    #[test]
    fn each_declared_file_is_judged_on_the_field_that_declares_it() {
        let vm = spec(
            "memory: 256MiB\nboot: {kernel: /k, initrd: /i}\ncdrom: /iso\n\
             disks: [{path: /a.qcow2}, {path: /b.img, format: qcow2}, {path: /c.img}, {volume: root}]",
        );
        assert_eq!(
            paths(&vm),
            ["/k", "/i", "/a.qcow2", "/b.img", "/c.img", "/iso"].map(PathBuf::from)
        );
        let file = |qcow2| FileFact::File { qcow2 };
        let facts: FileFacts = [
            ("/k", file(false)),
            ("/i", FileFact::Missing),
            ("/a.qcow2", file(false)),
            ("/b.img", file(true)),
            ("/c.img", file(true)),
            ("/iso", FileFact::NotAFile),
        ]
        .into_iter()
        .map(|(path, fact)| (PathBuf::from(path), fact))
        .collect();
        let found = refusals(&vm, &facts);
        let fields: Vec<&str> = found.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.boot.initrd",
                "spec.disks[0].path",
                "spec.disks[2].path",
                "spec.cdrom"
            ],
            "{found:?}"
        );
        assert!(
            found[0]
                .message
                .starts_with("/i does not exist on this host")
        );
        assert!(found[1].message.contains("not a qcow2 image"));
        assert!(found[2].message.contains("declare format: qcow2"));
        // Unasked paths are not judged.
        assert!(refusals(&vm, &FileFacts::new()).is_empty());
    }
}
