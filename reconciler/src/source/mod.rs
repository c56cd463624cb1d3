//! Sources: where the controller (`gitvisor run`) gets its revisions from.
//!
//! Two kinds, chosen from `--source` ([`Location::parse`]):
//!
//! - a local **directory**, watched with `notify` (inotify) so that a save is applied
//!   within a second ([`watch`]); its revision id is the content hash the loader computes;
//! - a **git repository** ([`git`]): fetched with the `git` CLI, so the users' ssh keys,
//!   `known_hosts` and credential helpers work as they do for them; shallow (`--depth 1`)
//!   fetches of one ref, polled; the revision id is the checked-out commit's SHA, and the
//!   commit's signature can be required ([`Verification`]).
//!
//! A source only yields manifest paths and, for git, the commit; loading and validating
//! them is the library's ([`crate::reconcile::load`]), so the controller rejects exactly
//! what `gitvisor validate` rejects.

mod contained;
mod error;
pub mod git;
pub mod watch;

use std::path::{Path, PathBuf};

pub use error::SourceError;
pub use git::{GitSource, Verification};
pub use watch::DirWatcher;

/// Where `--source` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory of manifests.
    Dir(PathBuf),
    /// A git URL (`file://`, `ssh://`, `git://`, `http(s)://`, or scp-like
    /// `user@host:path`).
    Git(String),
}

impl Location {
    /// A URL with a scheme, or scp-like `host:path` (a colon before any slash), is git;
    /// anything else is a directory. A local git checkout is given as `file:///path` to be
    /// treated as git (fetched, commit as revision) rather than as a plain directory.
    pub fn parse(text: &str) -> Location {
        let scheme = [
            "file://",
            "ssh://",
            "git://",
            "http://",
            "https://",
            "git+ssh://",
        ]
        .iter()
        .any(|scheme| text.starts_with(scheme));
        let scp_like = match (text.find(':'), text.find('/')) {
            (Some(colon), Some(slash)) => colon > 0 && colon < slash,
            (Some(colon), None) => colon > 0,
            _ => false,
        };
        if scheme || (scp_like && !Path::new(text).exists()) {
            Location::Git(text.to_owned())
        } else {
            Location::Dir(PathBuf::from(text))
        }
    }
}

/// One fetched state of a source, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The manifest directory to load.
    pub dir: PathBuf,
    /// The commit SHA, for a git source: the revision id.
    pub commit: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_scp_like_addresses_are_git_and_paths_are_directories() {
        for git in [
            "file:///srv/repo",
            "ssh://git@example.com/ops/hosts.git",
            "https://example.com/ops/hosts.git",
            "git@example.com:ops/hosts.git",
        ] {
            assert_eq!(Location::parse(git), Location::Git(git.into()), "{git}");
        }
        for dir in ["/etc/gitvisor", "manifests", "./a:b/c", "/srv/x:y"] {
            assert_eq!(Location::parse(dir), Location::Dir(dir.into()), "{dir}");
        }
    }
}
