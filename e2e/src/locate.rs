//! Where things are: the workspace, its examples, and the gitvisor binary under test
//! (`$GITVISOR_BIN`, else the workspace's debug build, with a loud warning when it is
//! older than the sources).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::report::loud;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent directory")
        .to_path_buf()
}

/// `examples/<name>` in the workspace.
pub fn example_dir(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// The gitvisor binary under test: `$GITVISOR_BIN`, else the workspace's debug build.
/// Panics with instructions when it does not exist.
pub fn gitvisor_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = match std::env::var_os("GITVISOR_BIN") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join("target"));
                let target = if target.is_absolute() {
                    target
                } else {
                    workspace_root().join(target)
                };
                target.join("debug").join("gitvisor")
            }
        };
        if !bin.is_file() {
            panic!(
                "the gitvisor binary was not found at {}\n\
                 build it first with `cargo build -p gitvisor`, or point GITVISOR_BIN at one",
                bin.display()
            );
        }
        warn_if_stale(&bin);
        bin
    })
}

/// Prints a loud warning when the binary is older than the newest file of the reconciler
/// crate's `src/` (or its Cargo.toml) (only when testing the workspace's own build).
fn warn_if_stale(bin: &Path) {
    if std::env::var_os("GITVISOR_BIN").is_some() {
        return;
    }
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let crate_dir = workspace_root().join("reconciler");
    let newest = newest_mtime(&crate_dir.join("src")).max(
        crate_dir
            .join("Cargo.toml")
            .metadata()
            .and_then(|m| m.modified())
            .ok(),
    );
    if newest.is_some_and(|newest| newest > built) {
        loud(&format!(
            "WARNING: {} is older than the newest file under reconciler/src; \
             the suite may be testing stale code (run `cargo build -p gitvisor`)",
            bin.display()
        ));
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = meta.modified() {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}
