//! `kind: NfsMount`: an NFS share mounted on this host (`docs/nfs.md`).
//!
//! gitvisor mounts `server:export` at `path` with the options it chose for a dead server
//! not to hang anything ([`DEFAULT_OPTIONS`]) plus the declared ones, which
//! `validate.rs` holds to a list that leaves ownership and safety as declared.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{Kind, KindSpec, Reference};

/// Where a share is mounted when `spec.path` is left out: `<state dir>/nfs/<name>`
/// (`/var/lib/gitvisor/nfs/NAME` by default).
pub const DEFAULT_MOUNT_DIR: &str = "nfs";

/// gitvisor's state dir when `--state-dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gitvisor";

/// The options gitvisor mounts every share with, before the declared ones (which may
/// replace `timeo` and `retrans`, or say `hard`):
///
/// - `soft`: a call on the share fails with an error after `retrans` retries instead of
///   waiting for the server forever, so a dead server turns into errors, not hung
///   processes (a VM's disk, a container's reads; and `umount`).
/// - `timeo=50`: 5 s before the first retry (NFS over TCP defaults to 60 s).
/// - `retrans=2`: two retries, so a call gives up after about 15 s.
/// - `retry=0` (read by `mount.nfs`, not the kernel): one attempt to mount, not two
///   minutes of retrying in the foreground; gitvisor retries at the next reconcile.
pub const DEFAULT_OPTIONS: &[&str] = &["soft", "timeo=50", "retrans=2", "retry=0"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NfsMountSpec {
    /// The NFS server: a host name or an address.
    pub server: String,
    /// The exported directory on the server, e.g. `/srv/media`.
    pub export: String,
    /// Where the share is mounted on this host (an absolute path); default
    /// `/var/lib/gitvisor/nfs/NAME` (under `--state-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The NFS version: `4.2` (default), `4.1` or `4`.
    #[serde(default = "default_version")]
    pub version: String,
    /// More mount options (`nfs(5)`), from a list that keeps ownership and safety as
    /// declared: see docs/nfs.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

fn default_version() -> String {
    "4.2".into()
}

impl NfsMountSpec {
    /// Where this share is mounted, given gitvisor's state dir.
    pub fn mount_path(&self, name: &str, state_dir: &Path) -> PathBuf {
        match &self.path {
            Some(path) => PathBuf::from(path),
            None => state_dir.join(DEFAULT_MOUNT_DIR).join(name),
        }
    }

    /// `server:/export`, as `mount` takes it and `/proc/self/mountinfo` shows it (an IPv6
    /// address in brackets).
    pub fn source(&self) -> String {
        let export = normalize_export(&self.export);
        if self.server.contains(':') && !self.server.starts_with('[') {
            format!("[{}]:{export}", self.server)
        } else {
            format!("{}:{export}", self.server)
        }
    }

    /// Every option gitvisor mounts with: `vers`, `ro`/`rw`, the defaults, then the
    /// declared options (a declared `hard` drops the default `soft`; a declared `timeo`
    /// or `retrans` replaces the default).
    pub fn mount_options(&self) -> Vec<String> {
        let declared_key = |key: &str| {
            self.options
                .iter()
                .any(|o| o.split('=').next() == Some(key))
        };
        let hard = self.options.iter().any(|o| o == "hard");
        let mut options = vec![
            format!("vers={}", self.version),
            if self.read_only { "ro" } else { "rw" }.to_owned(),
        ];
        for default in DEFAULT_OPTIONS {
            let key = default.split('=').next().unwrap_or(default);
            if (key == "soft" && hard) || declared_key(key) {
                continue;
            }
            options.push((*default).to_owned());
        }
        options.extend(self.options.iter().cloned());
        options
    }
}

/// `/srv/media/` and `/srv/media` are the same export.
pub fn normalize_export(export: &str) -> &str {
    let trimmed = export.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// A mount refers to nothing of gitvisor's (the server is found by name or address; a
/// Bridge it is reached over is a `dependsOn`).
impl KindSpec for NfsMountSpec {
    const KIND: Kind = Kind::NfsMount;

    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(options: &[&str]) -> NfsMountSpec {
        NfsMountSpec {
            server: "10.77.0.1".into(),
            export: "/srv/share/".into(),
            path: None,
            version: default_version(),
            options: options.iter().map(|s| (*s).to_owned()).collect(),
            read_only: true,
        }
    }

    #[test]
    fn defaults_make_a_dead_server_fail_calls_and_declared_options_replace_them() {
        assert_eq!(
            spec(&[]).mount_options(),
            ["vers=4.2", "ro", "soft", "timeo=50", "retrans=2", "retry=0"]
        );
        assert_eq!(
            spec(&["hard", "timeo=600"]).mount_options(),
            [
                "vers=4.2",
                "ro",
                "retrans=2",
                "retry=0",
                "hard",
                "timeo=600"
            ]
        );
        assert_eq!(spec(&[]).source(), "10.77.0.1:/srv/share");
        let mut v6 = spec(&[]);
        v6.server = "fd00::1".into();
        assert_eq!(v6.source(), "[fd00::1]:/srv/share");
        assert_eq!(
            spec(&[]).mount_path("media", Path::new("/var/lib/gitvisor")),
            Path::new("/var/lib/gitvisor/nfs/media")
        );
    }
}
