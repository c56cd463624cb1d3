//! Errors of a source: each names the repository or directory, what was being done, and
//! the fix; the underlying cause is in `source()`.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `git` could not be started at all.
    #[error("cannot run `git` to {operation} for {url} (is git installed and on PATH?)")]
    GitMissing {
        url: String,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// `git` ran and failed; `stderr` is what it said, trimmed.
    #[error("git {operation} for {url} failed ({status}): {stderr}")]
    Git {
        url: String,
        operation: &'static str,
        status: String,
        stderr: String,
    },

    #[error(
        "git {operation} for {url} did not finish within {}; it was killed \
         (is the remote reachable? a prompt for credentials is refused, not waited for)",
        humantime::format_duration(*timeout)
    )]
    GitTimeout {
        url: String,
        operation: &'static str,
        timeout: Duration,
    },

    /// `--ref` would be read by git as an option, or is empty.
    #[error(
        "--ref {reference:?} is not a branch, tag or commit name (it must not be empty or start with '-')"
    )]
    BadRef { reference: String },

    /// `--path` leaves the repository or names nothing.
    #[error(
        "--path {path:?} is not a directory inside the checkout of {url} \
         (give a relative path without '..', e.g. hosts/nuc1)"
    )]
    BadPath { url: String, path: PathBuf },

    /// A symlink of the commit, at `--path` or below it, resolves outside the checkout:
    /// loading through it would read host files as if they were the commit's. The
    /// revision is rejected like one that does not validate.
    #[error(
        "commit {commit} of {url}: {link} is a symlink to {target}, outside the repository: \
         everything loaded from a git source must be content of the commit (commit the \
         files themselves instead of a link to them)"
    )]
    SymlinkOutside {
        url: String,
        commit: String,
        /// The link, relative to the repository's root.
        link: PathBuf,
        target: PathBuf,
    },

    #[error("cannot inspect {path} in the checkout of {url} at commit {commit}")]
    Inspect {
        url: String,
        commit: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The commit is unsigned, or signed by a key the verification does not allow. A
    /// revision that fails this is rejected like one that does not validate.
    #[error(
        "commit {commit} of {url} is not signed by an allowed key ({how}): {detail} \
         (sign it with a key listed there, or fix the list)"
    )]
    Signature {
        url: String,
        commit: String,
        how: String,
        detail: String,
    },

    #[error("cannot create the checkout directory {path}")]
    CheckoutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot watch {path} for changes (is it a directory? inotify limits: fs.inotify.max_user_watches)"
    )]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

impl SourceError {
    /// Whether the error is about the revision itself (reject it, as a bad manifest is),
    /// rather than about reaching the source (keep the last good revision and retry at
    /// the next poll).
    pub fn rejects_revision(&self) -> bool {
        matches!(
            self,
            SourceError::Signature { .. }
                | SourceError::BadPath { .. }
                | SourceError::SymlinkOutside { .. }
        )
    }
}
