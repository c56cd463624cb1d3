//! Several manifest paths forming one revision (`gitvisor plan a/ b.yaml`).
//!
//! Steps, in order:
//! 1. Refuse a path given twice or inside another one (its documents would be declared
//!    twice and every resource reported as a duplicate).
//! 2. Load the paths, sorted, through [`load_paths`]: one pool of documents, validated and
//!    graphed exactly as for one path, so a reference from one path to a resource declared
//!    under another resolves.
//!
//! The paths are loaded sorted, so the same manifests given in another order are the same
//! revision.

use std::path::{Path, PathBuf};

use super::files::file_error;
use super::{Diagnostic, ParseCache, Revision, RevisionErrors, load_paths_cached};

/// Loads the manifests under every path in `paths` as one revision, in a canonical
/// (sorted) order, so the same manifests given in another order are the same revision.
pub fn load_revision_paths(paths: &[PathBuf], host: &str) -> Result<Revision, RevisionErrors> {
    load_revision_paths_cached(paths, host, None)
}

/// [`load_revision_paths`], reusing the parse of unchanged files from `cache` (the
/// controller's; see [`ParseCache`]).
pub fn load_revision_paths_cached(
    paths: &[PathBuf],
    host: &str,
    cache: Option<&mut ParseCache>,
) -> Result<Revision, RevisionErrors> {
    let mut diagnostics = overlapping(paths);
    if paths.is_empty() {
        diagnostics.push(file_error(Path::new("."), "no manifest path given".into()));
    }
    if !diagnostics.is_empty() {
        diagnostics.sort();
        diagnostics.dedup();
        return Err(RevisionErrors { diagnostics });
    }
    let mut sorted: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    sorted.sort();
    load_paths_cached(&sorted, host, cache)
}

/// A diagnostic for every path that repeats or lies inside another path of `paths`.
fn overlapping(paths: &[PathBuf]) -> Vec<Diagnostic> {
    let canonical: Vec<Option<PathBuf>> = paths
        .iter()
        .map(|path| std::fs::canonicalize(path).ok())
        .collect();
    let mut diagnostics = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let Some(mine) = &canonical[i] else { continue };
        let container = canonical.iter().enumerate().find(|(j, other)| {
            *j != i
                && other
                    .as_ref()
                    .is_some_and(|other| mine.starts_with(other) && (mine != other || *j < i))
        });
        if let Some((j, _)) = container {
            diagnostics.push(file_error(
                path,
                format!(
                    "this path is already part of the revision through {}; give each manifest once",
                    paths[j].display()
                ),
            ));
        }
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str =
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: NAME}\nspec: {}\n";
    const NEEDS_BR0: &str = "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: br1, dependsOn: [Bridge/br0]}\nspec: {}\n";

    fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn two_paths_are_one_revision_with_references_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.yaml", &BRIDGE.replace("NAME", "br0"));
        let b = write(dir.path(), "b.yaml", NEEDS_BR0);
        let revision = load_revision_paths(&[a.clone(), b.clone()], "h").unwrap();
        assert_eq!(revision.resources.len(), 2);
        let swapped = load_revision_paths(&[b.clone(), a], "h").unwrap();
        assert_eq!(
            revision.id, swapped.id,
            "argument order changed the revision"
        );
        assert!(
            load_revision_paths(&[b], "h").is_err(),
            "br0 is not declared alone"
        );
    }

    #[test]
    fn a_path_inside_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.yaml", &BRIDGE.replace("NAME", "br0"));
        let errors = load_revision_paths(&[dir.path().to_owned(), a.clone()], "h").unwrap_err();
        assert!(
            errors
                .diagnostics
                .iter()
                .any(|d| d.file == a && d.message.contains("already part of the revision")),
            "{errors}"
        );
        let errors = load_revision_paths(&[a.clone(), a], "h").unwrap_err();
        assert_eq!(
            errors
                .diagnostics
                .iter()
                .filter(|d| d.message.contains("already part"))
                .count(),
            1,
            "{errors}"
        );
    }
}
