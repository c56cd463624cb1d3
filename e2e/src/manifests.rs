//! Manifest builders: a temporary directory of manifest files (one revision), copies of
//! the examples, and the YAML of single resources.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::env::tempdir;
use crate::locate::example_dir;

/// A temporary directory of manifest files: one revision.
#[derive(Debug)]
pub struct Manifests {
    dir: TempDir,
}

impl Default for Manifests {
    fn default() -> Self {
        Self::new()
    }
}

impl Manifests {
    /// An empty revision.
    pub fn new() -> Manifests {
        Manifests {
            dir: tempdir("manifests"),
        }
    }

    /// A copy of `examples/<name>` (so a test can edit it).
    pub fn from_example(name: &str) -> Manifests {
        let manifests = Manifests::new();
        let source = example_dir(name);
        let entries = std::fs::read_dir(&source)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", source.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let file_name = path.file_name().expect("a file has a name");
                std::fs::copy(&path, manifests.path().join(file_name))
                    .unwrap_or_else(|err| panic!("cannot copy {}: {err}", path.display()));
            }
        }
        manifests
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory as a `&str` (temporary paths are UTF-8 here).
    pub fn path_str(&self) -> &str {
        self.path().to_str().expect("temporary path is UTF-8")
    }

    /// Writes (or overwrites) `file` with `content`; returns its path.
    pub fn write(&self, file: &str, content: &str) -> PathBuf {
        let path = self.path().join(file);
        std::fs::write(&path, content)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        path
    }

    /// Reads `file` back.
    pub fn read(&self, file: &str) -> String {
        let path = self.path().join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
    }

    /// Removes `file`.
    pub fn remove(&self, file: &str) {
        let path = self.path().join(file);
        std::fs::remove_file(&path)
            .unwrap_or_else(|err| panic!("cannot remove {}: {err}", path.display()));
    }
}

/// A manifest of any kind. `spec` is the YAML body of `spec:` (already indented by two
/// spaces per line, or `{}`); `metadata_extra` lines go under `metadata:` after `name`
/// (`"dependsOn: [Volume/data]"`, `"host: other"`).
pub fn resource_manifest(kind: &str, name: &str, metadata_extra: &[&str], spec: &str) -> String {
    let mut out =
        format!("apiVersion: gitvisor.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n");
    for line in metadata_extra {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if spec.trim() == "{}" {
        out.push_str("spec: {}\n");
    } else {
        out.push_str("spec:\n");
        out.push_str(spec);
        if !spec.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A Bridge manifest: [`resource_manifest`] of kind `Bridge`.
pub fn bridge_manifest(name: &str, metadata_extra: &[&str], spec: &str) -> String {
    resource_manifest("Bridge", name, metadata_extra, spec)
}

/// The IPv4 address `10.<i / 256>.<i % 256>.1/24` used by the many-bridges tests, so
/// every bridge has its own /24.
pub fn nth_address(i: usize) -> String {
    format!("10.{}.{}.1/24", (i / 256) % 256, i % 256)
}
