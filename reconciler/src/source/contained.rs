//! A git checkout holds the commit's content only as long as nothing in it points
//! elsewhere: git commits symlinks as links, so a commit can carry `hosts -> /etc/app`,
//! and loading `--path hosts` through it would apply a host directory's manifests under
//! the commit's SHA, outside any signature check.
//!
//! [`manifest_dir`] resolves `--path` inside the checkout one component at a time (a
//! component that is a symlink must resolve inside the repository), then walks
//! everything below it without following links and refuses the first symlink whose
//! target resolves outside the repository, or into its `.git` directory (not the
//! commit's content either). A link that resolves inside is left to the loader, which
//! follows it within the manifest tree. A dangling link reads nothing and is left to the
//! loader too (it reports one with a manifest's name).

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Why `--path` cannot be loaded from the checkout.
#[derive(Debug)]
pub(super) enum Refusal {
    /// `link` (relative to the repository's root) resolves to `target`, outside it.
    Outside { link: PathBuf, target: PathBuf },
    /// `--path` names nothing, or something that is not a directory.
    NotADirectory,
    /// The checkout could not be read at `path`.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Refusal + '_ {
    move |source| Refusal::Io {
        path: path.to_owned(),
        source,
    }
}

/// The directory to load for `subpath` (relative, without `..`) in the checkout at
/// `root`, once nothing at it or below it leaves the repository. Blocking: run it off the
/// async threads.
pub(super) fn manifest_dir(root: &Path, subpath: Option<&Path>) -> Result<PathBuf, Refusal> {
    let real_root = fs::canonicalize(root).map_err(io(root))?;
    let git_dir = real_root.join(".git");
    let inside = |target: &Path| target.starts_with(&real_root) && !target.starts_with(&git_dir);
    let mut real = real_root.clone();
    let mut written = PathBuf::new();
    for component in subpath.into_iter().flat_map(Path::components) {
        let Component::Normal(part) = component else {
            continue;
        };
        written.push(part);
        let next = real.join(part);
        let metadata = match fs::symlink_metadata(&next) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Refusal::NotADirectory);
            }
            Err(error) => return Err(io(&next)(error)),
        };
        real = if metadata.file_type().is_symlink() {
            let target = fs::canonicalize(&next).map_err(|_| Refusal::NotADirectory)?;
            if !inside(&target) {
                return Err(Refusal::Outside {
                    link: written,
                    target,
                });
            }
            target
        } else {
            next
        };
    }
    if !real.is_dir() {
        return Err(Refusal::NotADirectory);
    }
    let mut pending = vec![real];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            if path == git_dir {
                continue;
            }
            let file_type = entry.file_type().map_err(io(&path))?;
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_symlink() {
                match fs::canonicalize(&path) {
                    Ok(target) if !inside(&target) => {
                        return Err(Refusal::Outside {
                            link: path.strip_prefix(&real_root).unwrap_or(&path).to_owned(),
                            target,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(match subpath {
        Some(subpath) => root.join(subpath),
        None => root.to_owned(),
    })
}
