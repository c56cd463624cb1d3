//! Where a revision comes from, as the store remembers it to decide what may be pruned.
//!
//! For manifest paths the source is their canonical paths, sorted and joined with `\n`, so
//! `apply a b`, `apply ./b a` and `apply /abs/a b` are one source, and `apply a` is another.

use std::path::{Path, PathBuf};

/// The identity of the manifests a revision was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    paths: Vec<PathBuf>,
    id: String,
}

impl Source {
    /// The source made of these manifest paths (files or directories).
    pub fn from_paths(paths: &[PathBuf]) -> Source {
        let mut canonical: Vec<String> = paths
            .iter()
            .map(|path| canonical(path).display().to_string())
            .collect();
        canonical.sort();
        canonical.dedup();
        Source {
            paths: paths.to_vec(),
            id: canonical.join("\n"),
        }
    }

    /// A source whose manifests are read from `paths` but which the store records as
    /// `id`: a git repository (its URL), checked out to a directory that changes.
    pub fn with_id(paths: &[PathBuf], id: impl Into<String>) -> Source {
        Source {
            paths: paths.to_vec(),
            id: id.into(),
        }
    }

    /// The source a store record names, when it names manifest paths (one per line).
    pub fn from_recorded(id: &str) -> Option<Source> {
        if id.is_empty() {
            return None;
        }
        let paths: Vec<PathBuf> = id.lines().map(PathBuf::from).collect();
        paths.iter().all(|p| p.is_absolute()).then(|| Source {
            paths,
            id: id.to_owned(),
        })
    }

    /// The manifest paths, as given.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// What the store records: canonical paths, sorted, one per line.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The canonical form of `path`, or `path` made absolute when it cannot be resolved.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_spelling_of_paths_do_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let one = Source::from_paths(&[a.clone(), b.clone()]);
        let two = Source::from_paths(&[b.join("."), a.join("../a")]);
        assert_eq!(one.id(), two.id());
        assert_ne!(one.id(), Source::from_paths(&[a]).id());
        assert_eq!(one.id().lines().count(), 2);
    }

    #[test]
    fn recorded_sources_round_trip() {
        let source = Source::from_recorded("/srv/a\n/srv/b").unwrap();
        assert_eq!(
            source.paths(),
            [PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert!(Source::from_recorded("").is_none());
        assert!(Source::from_recorded("https://example.com/repo.git").is_none());
    }
}
