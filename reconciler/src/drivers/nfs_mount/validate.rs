//! An NfsMount's validation: the server, export, path and version are ones `mount`
//! takes as they are, and `options` are held to a list.
//!
//! # Options
//!
//! An option is allowed only when it leaves who owns what on the share, and what
//! gitvisor relies on to stay responsive, as declared. Allowed: `hard`, `soft`,
//! `softreval`, `nosoftreval`, `timeo=`, `retrans=`, `rsize=`, `wsize=`, `nconnect=`,
//! `max_connect=`, `proto=tcp|tcp6|rdma`, `port=`, `ac`, `noac`, `actimeo=`,
//! `acregmin=`, `acregmax=`, `acdirmin=`, `acdirmax=`, `lookupcache=`, `cto`, `nocto`,
//! `fsc`, `nofsc`, `sharecache`, `nosharecache`, `resvport`, `noresvport`, `atime`,
//! `noatime`, `diratime`, `nodiratime`, `relatime`, `strictatime`, `nosuid`, `nodev`,
//! `noexec`, `clientaddr=`.
//!
//! Refused, each with the field that says it or why:
//! - `vers=`, `nfsvers=`, `minorversion=`: `spec.version` says it; `ro`, `rw`:
//!   `spec.readOnly` says it (two places would disagree).
//! - `sec=`: changes who the server takes the client's users for (Kerberos principals
//!   instead of uids), which is ownership semantics, and needs keytabs gitvisor does
//!   not manage.
//! - `nolock`, `local_lock=`: locks taken here would no longer be seen by other clients,
//!   so two hosts could write one VM image at once.
//! - `suid`, `dev`, `exec` are allowed (the mount defaults), but `user`, `users`,
//!   `owner`, `group`: they let other users unmount or remount what gitvisor owns.
//! - `bg`, `fg`, `retry=`: mounting in the background (or retrying for minutes) would
//!   hide the outcome from gitvisor and outlive its deadline; gitvisor retries at the
//!   next reconcile.
//! - `remount`, `bind`, `move`, `rbind`: not a mount of a share.
//! - anything else: unknown here, so not known to be safe.

use super::NfsMountSpec;
use crate::manifest::{Diagnostic, LoadedResource};

/// Options allowed with no value.
const FLAGS: &[&str] = &[
    "hard",
    "soft",
    "softreval",
    "nosoftreval",
    "ac",
    "noac",
    "cto",
    "nocto",
    "fsc",
    "nofsc",
    "sharecache",
    "nosharecache",
    "resvport",
    "noresvport",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "strictatime",
    "nosuid",
    "nodev",
    "noexec",
    "suid",
    "dev",
    "exec",
];

/// Options allowed with a number.
const NUMBERS: &[&str] = &[
    "timeo",
    "retrans",
    "rsize",
    "wsize",
    "nconnect",
    "max_connect",
    "port",
    "actimeo",
    "acregmin",
    "acregmax",
    "acdirmin",
    "acdirmax",
];

/// Why `option` is refused, or `None` when it is allowed.
pub fn refuse_option(option: &str) -> Option<String> {
    let (key, value) = match option.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (option, None),
    };
    let why = match key {
        "vers" | "nfsvers" | "minorversion" => "the version is spec.version",
        "ro" | "rw" => "read-only or not is spec.readOnly",
        "sec" => {
            "sec= changes who the server takes this host's users for (Kerberos principals instead of uids), and gitvisor does not manage the keytabs it needs"
        }
        "nolock" | "local_lock" | "lock" => {
            "locks taken here would not be seen by other clients, so two hosts could write the same file (a VM image) at once"
        }
        "user" | "users" | "owner" | "group" | "nouser" => {
            "it lets users other than root mount or unmount what gitvisor owns"
        }
        "bg" | "fg" | "retry" => {
            "gitvisor mounts once in the foreground under its own deadline (retry=0) and retries at the next reconcile; a background or retrying mount would outlive the deadline and hide the outcome"
        }
        "remount" | "bind" | "rbind" | "move" | "defaults" => "it is not an option of a share",
        "intr" | "nointr" | "uid" | "gid" | "all_squash" | "root_squash" | "no_root_squash" => {
            "the NFS client has no such option (squashing is the server's export option)"
        }
        _ if value.is_none() && FLAGS.contains(&key) => return None,
        _ if NUMBERS.contains(&key) => {
            return match value.map(str::parse::<u32>) {
                Some(Ok(_)) => None,
                _ => Some(format!("option {option:?}: {key}= takes a whole number")),
            };
        }
        "proto" => {
            return match value {
                Some("tcp" | "tcp6" | "rdma" | "rdma6") => None,
                _ => Some(format!(
                    "option {option:?}: NFSv4 runs over tcp, tcp6, rdma or rdma6"
                )),
            };
        }
        "lookupcache" => {
            return match value {
                Some("all" | "none" | "pos" | "positive") => None,
                _ => Some(format!(
                    "option {option:?}: lookupcache= is all, none or positive"
                )),
            };
        }
        "clientaddr" => {
            return match value.map(str::parse::<std::net::IpAddr>) {
                Some(Ok(_)) => None,
                _ => Some(format!("option {option:?}: clientaddr= takes an address")),
            };
        }
        _ => "gitvisor does not know it to be safe (see docs/nfs.md for the options it takes)",
    };
    Some(format!("option {option:?} is refused: {why}"))
}

/// The rules of one NfsMount on its own; every finding goes to `diagnostics`.
pub(crate) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let Some(spec) = item.resource.spec.get::<NfsMountSpec>() else {
        return;
    };
    let mut error =
        |field: &str, message: String| diagnostics.push(item.diagnostic(field, message));
    let plain = |s: &str| {
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    };
    if !plain(&spec.server) || spec.server.starts_with('-') || spec.server.contains('/') {
        error(
            "spec.server",
            format!(
                "{:?} is not a host name or an address (no spaces, commas or slashes)",
                spec.server
            ),
        );
    }
    if !spec.export.starts_with('/') || !plain(&spec.export) {
        error(
            "spec.export",
            format!(
                "{:?} is not an absolute path on the server (e.g. /srv/media), without spaces or commas",
                spec.export
            ),
        );
    }
    if let Some(path) = &spec.path
        && (!path.starts_with('/') || path.trim_end_matches('/').is_empty() || !plain(path))
    {
        error(
            "spec.path",
            format!("{path:?} is not an absolute path other than / (without spaces or commas)"),
        );
    }
    if !["4", "4.0", "4.1", "4.2"].contains(&spec.version.as_str()) {
        error(
            "spec.version",
            format!(
                "NFS version {:?} is not one gitvisor mounts: 4.2 (default), 4.1 or 4 (NFSv3 needs rpcbind and lockd, which a dead server makes hang)",
                spec.version
            ),
        );
    }
    for (i, option) in spec.options.iter().enumerate() {
        if let Some(why) = refuse_option(option) {
            error(&format!("spec.options[{i}]"), why);
        }
    }
}

/// Every declared `spec.path` is its own, and none is inside another: two shares at one
/// place would hide each other, and a share inside another would be mounted on the
/// server's files (and held by it). Reported at the later declaration, naming the
/// earlier one's place. (Default paths, `<state dir>/nfs/NAME`, differ by name.)
pub(crate) fn check_revision(selected: &[&LoadedResource], diagnostics: &mut Vec<Diagnostic>) {
    let mut seen: Vec<(&LoadedResource, String)> = Vec::new();
    for &item in selected {
        let Some(path) = item
            .resource
            .spec
            .get::<NfsMountSpec>()
            .and_then(|spec| spec.path.as_deref())
        else {
            continue;
        };
        let path = path.trim_end_matches('/').to_owned();
        let inside = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if let Some((first, first_path)) = seen
            .iter()
            .find(|(_, other)| *other == path || inside(other, &path) || inside(&path, other))
        {
            let how = if *first_path == path {
                "is also the path of"
            } else {
                "is inside, or holds, the path of"
            };
            diagnostics.push(item.diagnostic(
                "spec.path",
                format!(
                    "{path} {how} {} (spec.path at {}); give each share its own mount point",
                    first.resource.id(),
                    first.place("spec.path")
                ),
            ));
            continue;
        }
        seen.push((item, path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_change_ownership_or_safety_are_refused_and_tuning_is_not() {
        for allowed in ["hard", "timeo=600", "nconnect=4", "noatime", "proto=tcp"] {
            assert_eq!(refuse_option(allowed), None, "{allowed}");
        }
        for (refused, word) in [
            ("sec=krb5", "Kerberos"),
            ("nolock", "other clients"),
            ("local_lock=all", "other clients"),
            ("vers=3", "spec.version"),
            ("ro", "spec.readOnly"),
            ("user", "other than root"),
            ("bg", "foreground"),
            ("retry=10", "foreground"),
            ("uid=1000", "no such option"),
            ("timeo=soon", "whole number"),
            ("frobnicate", "does not know"),
        ] {
            let why = refuse_option(refused).unwrap_or_default();
            assert!(why.contains(word), "{refused}: {why}");
        }
    }
}
