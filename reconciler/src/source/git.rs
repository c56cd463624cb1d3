//! A git repository as a source, through the `git` CLI (as Argo CD does), so that the
//! users' ssh keys, `known_hosts`, `~/.gitconfig` and credential helpers apply unchanged.
//!
//! The checkout lives under the state dir (`<state-dir>/sources/<hash of the URL>`), one
//! per URL, and is reused across restarts. Steps of one poll, in order:
//!
//! 1. [`GitSource::fetch`]: `git fetch --depth 1 --no-tags URL REF` (shallow: only the
//!    commit asked for), then `git rev-parse FETCH_HEAD^{commit}`: the commit the ref
//!    names now. Nothing is checked out yet, so the caller can skip a commit it has
//!    already applied or rejected.
//! 2. [`GitSource::checkout`]: with [`Verification`], `git verify-commit` first: an
//!    unsigned or badly signed commit is never checked out, and is rejected like a
//!    revision that does not validate. Then `git checkout --force --detach COMMIT` and
//!    `git clean -ffdxq` so the tree is exactly the commit's, and `--path` is resolved
//!    inside it: a symlink at it or below it that leaves the repository rejects the
//!    commit ([`super::contained`]), so what is loaded is the commit's content.
//!
//! Every `git` runs with a timeout and `kill_on_drop`, never through a shell, with
//! `GIT_TERMINAL_PROMPT=0` (a missing credential fails instead of waiting for a person)
//! and without the controller's `NOTIFY_SOCKET`. URLs and refs reach git as argv after
//! `--` or validated not to start with `-`.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::contained::{self, Refusal};
use super::{Checkout, SourceError};

/// How long one `git` command may run.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How a commit's signature is checked (`git verify-commit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// SSH signatures against an allowed-signers file (`gpg.ssh.allowedSignersFile`).
    Ssh { allowed_signers: PathBuf },
    /// OpenPGP signatures against the keys of a GnuPG home directory (`GNUPGHOME`).
    Gpg { home: PathBuf },
}

impl Verification {
    fn describe(&self) -> String {
        match self {
            Verification::Ssh { allowed_signers } => {
                format!("ssh, allowed signers {}", allowed_signers.display())
            }
            Verification::Gpg { home } => format!("gpg, keyring {}", home.display()),
        }
    }
}

/// One repository, ref and path, checked out under the state dir.
#[derive(Debug, Clone)]
pub struct GitSource {
    url: String,
    reference: String,
    subpath: Option<PathBuf>,
    checkout: PathBuf,
    verification: Option<Verification>,
    timeout: Duration,
}

impl GitSource {
    /// `reference` defaults to the remote's `HEAD`; `subpath` is relative to the
    /// repository's root. The checkout goes under `<state_dir>/sources/`.
    pub fn new(
        url: &str,
        reference: Option<&str>,
        subpath: Option<&Path>,
        state_dir: &Path,
        verification: Option<Verification>,
    ) -> Result<GitSource, SourceError> {
        let reference = reference.unwrap_or("HEAD").to_owned();
        if reference.is_empty() || reference.starts_with('-') {
            return Err(SourceError::BadRef { reference });
        }
        if let Some(path) = subpath {
            let inside = path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(SourceError::BadPath {
                    url: url.to_owned(),
                    path: path.to_owned(),
                });
            }
        }
        let digest = Sha256::digest(url.as_bytes());
        let name: String = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(GitSource {
            url: url.to_owned(),
            reference,
            subpath: subpath.map(Path::to_owned),
            checkout: state_dir.join("sources").join(name),
            verification,
            timeout: GIT_TIMEOUT,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the store records as the source of revisions from here: the URL, and the
    /// path inside it when one is given, so two paths of one repository are two sources.
    pub fn id(&self) -> String {
        match &self.subpath {
            Some(path) => format!("{}#{}", self.url, path.display()),
            None => self.url.clone(),
        }
    }

    /// Where the repository is checked out.
    pub fn checkout_dir(&self) -> &Path {
        &self.checkout
    }

    /// Fetches the ref and returns the commit it names now. Checks nothing out.
    pub async fn fetch(&self) -> Result<String, SourceError> {
        if !self.checkout.join(".git").is_dir() {
            std::fs::create_dir_all(&self.checkout).map_err(|source| SourceError::CheckoutDir {
                path: self.checkout.clone(),
                source,
            })?;
            self.git("initialise the checkout", ["init", "--quiet"], &[])
                .await?;
        }
        self.git(
            "fetch",
            [
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--no-write-fetch-head",
            ]
            .into_iter()
            .map(OsStr::new)
            .chain([OsStr::new("--"), OsStr::new(&self.url)])
            .chain([OsStr::new(&format!(
                "+{}:refs/gitvisor/fetched",
                self.reference
            ))]),
            &[],
        )
        .await?;
        let commit = self
            .git(
                "resolve the fetched commit",
                [
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "refs/gitvisor/fetched^{commit}",
                ],
                &[],
            )
            .await?;
        Ok(commit.trim().to_owned())
    }

    /// Verifies `commit` (when asked to), checks it out, and returns where to load from.
    pub async fn checkout(&self, commit: &str) -> Result<Checkout, SourceError> {
        if let Some(verification) = &self.verification {
            self.verify(commit, verification).await?;
        }
        self.git(
            "check out the commit",
            [
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--quiet",
                "--force",
                "--detach",
                commit,
            ],
            &[],
        )
        .await?;
        self.git("clean the checkout", ["clean", "-ffdxq"], &[])
            .await?;
        let (root, subpath) = (self.checkout.clone(), self.subpath.clone());
        let resolved =
            tokio::task::spawn_blocking(move || contained::manifest_dir(&root, subpath.as_deref()))
                .await
                .map_err(|error| SourceError::Inspect {
                    url: self.url.clone(),
                    commit: commit.to_owned(),
                    path: self.checkout.clone(),
                    source: std::io::Error::other(error.to_string()),
                })?;
        let dir = resolved.map_err(|refusal| match refusal {
            Refusal::Outside { link, target } => SourceError::SymlinkOutside {
                url: self.url.clone(),
                commit: commit.to_owned(),
                link,
                target,
            },
            Refusal::NotADirectory => SourceError::BadPath {
                url: self.url.clone(),
                path: self.subpath.clone().unwrap_or_default(),
            },
            Refusal::Io { path, source } => SourceError::Inspect {
                url: self.url.clone(),
                commit: commit.to_owned(),
                path,
                source,
            },
        })?;
        Ok(Checkout {
            dir,
            commit: Some(commit.to_owned()),
        })
    }

    async fn verify(&self, commit: &str, verification: &Verification) -> Result<(), SourceError> {
        let result = match verification {
            Verification::Ssh { allowed_signers } => {
                let setting = format!("gpg.ssh.allowedSignersFile={}", allowed_signers.display());
                self.git(
                    "verify the commit's signature",
                    [
                        OsStr::new("-c"),
                        OsStr::new("gpg.format=ssh"),
                        OsStr::new("-c"),
                        OsStr::new(&setting),
                        OsStr::new("verify-commit"),
                        OsStr::new(commit),
                    ],
                    &[],
                )
                .await
            }
            Verification::Gpg { home } => {
                self.git(
                    "verify the commit's signature",
                    ["verify-commit", commit],
                    &[("GNUPGHOME", home.as_os_str())],
                )
                .await
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(SourceError::Git { stderr, .. }) => Err(SourceError::Signature {
                url: self.url.clone(),
                commit: commit.to_owned(),
                how: verification.describe(),
                detail: if stderr.is_empty() {
                    "the commit has no signature".to_owned()
                } else {
                    stderr
                },
            }),
            Err(other) => Err(other),
        }
    }

    /// Runs `git -C <checkout> ARGS` and returns its stdout.
    async fn git<I, S>(
        &self,
        operation: &'static str,
        args: I,
        env: &[(&str, &OsStr)],
    ) -> Result<String, SourceError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = tokio::process::Command::new("git");
        command
            .arg("-C")
            .arg(&self.checkout)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().map_err(|source| SourceError::GitMissing {
            url: self.url.clone(),
            operation,
            source,
        })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(SourceError::GitMissing {
                    url: self.url.clone(),
                    operation,
                    source,
                });
            }
            Err(_) => {
                return Err(SourceError::GitTimeout {
                    url: self.url.clone(),
                    operation,
                    timeout: self.timeout,
                });
            }
        };
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(SourceError::Git {
            url: self.url.clone(),
            operation,
            status: output.status.to_string(),
            stderr: crate::load::sanitize(&stderr.trim().replace('\n', "; ")).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_that_git_would_read_as_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "-c", "--upload-pack=evil"] {
            let err = GitSource::new("file:///r", Some(bad), None, dir.path(), None).unwrap_err();
            assert!(matches!(err, SourceError::BadRef { .. }), "{bad}: {err}");
        }
        assert!(GitSource::new("file:///r", Some("main"), None, dir.path(), None).is_ok());
    }

    #[test]
    fn paths_must_stay_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc", "a/../../b"] {
            let err = GitSource::new("file:///r", None, Some(Path::new(bad)), dir.path(), None)
                .unwrap_err();
            assert!(matches!(err, SourceError::BadPath { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn one_checkout_per_url_and_the_path_is_part_of_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = GitSource::new("file:///a", None, None, dir.path(), None).unwrap();
        let b = GitSource::new(
            "file:///b",
            None,
            Some(Path::new("hosts")),
            dir.path(),
            None,
        )
        .unwrap();
        assert_ne!(a.checkout_dir(), b.checkout_dir());
        assert_eq!(a.id(), "file:///a");
        assert_eq!(b.id(), "file:///b#hosts");
    }
}
