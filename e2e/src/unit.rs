//! The shipped systemd unit's sandbox, reproduced without systemd.
//!
//! `contrib/systemd/gitvisor.service` restricts the controller, and everything it starts
//! inherits the restriction: runc and the containers, dnsmasq, QEMU, LVM, nft. A unit
//! that is stricter than a driver needs breaks that driver only on a real host, under
//! systemd, where no test runs. So [`ServiceSandbox::shipped`] reads the unit file itself
//! (never a copy) and [`ServiceSandbox::wrap`] turns a gitvisor command into the same
//! command under the unit's restrictions, which a test then drives through a real apply.
//!
//! # What is reproduced, and how
//!
//! - `CapabilityBoundingSet=`: `setpriv --bounding-set -all,+…` (and empty inheritable
//!   and ambient sets, as systemd gives a root service), so the process and every child
//!   can hold at most those capabilities.
//! - `AmbientCapabilities=` (empty): `--ambient-caps -all`.
//! - `NoNewPrivileges=yes`: `setpriv --no-new-privs`.
//! - `UMask=`: `umask` before the exec.
//! - Any setting that gives the service a mount namespace of its own
//!   ([`MOUNT_NAMESPACE_SETTINGS`], e.g. `ProtectSystem=`, `PrivateTmp=`): the namespace
//!   (`unshare --mount --propagation slave`, as systemd makes it). Its read-only and
//!   hidden paths are not reproduced: the namespace alone already hides the containers'
//!   root file system mounts from the host, which a test checks.
//! - [`SECCOMP_SETTINGS`] (`SystemCallFilter=`, `RestrictAddressFamilies=`,
//!   `RestrictNamespaces=`, …): the seccomp filter systemd would compile from them,
//!   installed by `e2e/scripts/systemd-seccomp.py` (libseccomp through ctypes) just
//!   before the exec, the groups expanded by `systemd-analyze syscall-filter`. Close to
//!   systemd's, not byte-identical: a refused `socket(2)` family fails with
//!   `EAFNOSUPPORT` as under systemd, everything else with `SystemCallErrorNumber=`.
//!
//! # What is refused
//!
//! [`REFUSED_SETTINGS`] break a driver whatever else the unit says (`ProtectClock=`
//! closes `/dev/kvm`, `ProtectHostname=` forbids the `sethostname(2)` runc calls for
//! every container, …); a test refuses them outright, with the reason. Any other setting
//! of the `[Service]` section must be in [`NOT_SANDBOXING`], or
//! [`ServiceSandbox::shipped`] panics: a new sandboxing line is either reproduced here
//! or listed with its reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::workspace_root;

/// Where the unit lives in the repository.
pub const UNIT_FILE: &str = "contrib/systemd/gitvisor.service";

/// Settings under which systemd runs the service in a mount namespace of its own, whose
/// mounts never propagate to the host.
pub const MOUNT_NAMESPACE_SETTINGS: &[&str] = &[
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "MountAPIVFS",
];

/// Settings systemd enforces with seccomp, reproduced by `e2e/scripts/systemd-seccomp.py`.
pub const SECCOMP_SETTINGS: &[&str] = &[
    "SystemCallFilter",
    "SystemCallArchitectures",
    "SystemCallErrorNumber",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "LockPersonality",
];

/// Settings that break a driver, each with the reason; a test refuses them.
pub const REFUSED_SETTINGS: &[(&str, &str)] = &[
    (
        "DeviceAllow",
        "only the listed devices stay open: not /dev/kvm, /dev/net/tun (QEMU) or \
         /dev/mapper/control (LVM)",
    ),
    (
        "DevicePolicy",
        "closes /dev/kvm, /dev/net/tun (QEMU) and /dev/mapper/control (LVM)",
    ),
    (
        "ProtectClock",
        "implies DeviceAllow=char-rtc, which closes every other device: /dev/kvm, \
         /dev/net/tun (QEMU), /dev/mapper/control (LVM)",
    ),
    (
        "ProtectHostname",
        "forbids sethostname(2) to the service and all it starts (seccomp), and runc \
         names every container's UTS namespace with it",
    ),
    (
        "RestrictSUIDSGID",
        "image layers carry setuid and setgid files (su, passwd, mount), which the image \
         store could then not unpack",
    ),
    (
        "MemoryDenyWriteExecute",
        "QEMU's TCG writes code and runs it",
    ),
];

/// `[Service]` settings that restrict nothing a driver does.
pub const NOT_SANDBOXING: &[&str] = &[
    "Type",
    "NotifyAccess",
    "EnvironmentFile",
    "ExecStart",
    "ExecReload",
    "Restart",
    "RestartSec",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "WatchdogSec",
    "KillMode",
    "StateDirectory",
    "StateDirectoryMode",
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "RuntimeDirectoryPreserve",
];

/// The `[Service]` section of the shipped unit, as the sandbox it describes.
#[derive(Debug, Clone)]
pub struct ServiceSandbox {
    /// Every assignment, in order, with the key's assignments joined as systemd does
    /// (an empty assignment resets the list).
    settings: BTreeMap<String, Vec<String>>,
}

impl ServiceSandbox {
    /// Reads `contrib/systemd/gitvisor.service`; panics on a setting this harness neither
    /// reproduces nor lists with a reason.
    pub fn shipped() -> ServiceSandbox {
        let path = Self::path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let sandbox = Self::parse(&text);
        for key in sandbox.settings.keys() {
            let known = [
                NOT_SANDBOXING,
                MOUNT_NAMESPACE_SETTINGS,
                SECCOMP_SETTINGS,
                REPRODUCED,
            ]
            .iter()
            .any(|list| list.contains(&key.as_str()))
                || REFUSED_SETTINGS.iter().any(|(refused, _)| refused == key);
            assert!(
                known,
                "{UNIT_FILE} sets {key}, which e2e/src/unit.rs neither reproduces nor lists \
                 with a reason: add it to one of its lists"
            );
        }
        sandbox
    }

    /// The unit file's path.
    pub fn path() -> PathBuf {
        workspace_root().join(UNIT_FILE)
    }

    fn parse(text: &str) -> ServiceSandbox {
        let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{UNIT_FILE}: not a setting: {line}"));
            let values = settings.entry(key.trim().to_owned()).or_default();
            let value = value.trim();
            if value.is_empty() {
                values.clear();
            } else {
                values.extend(value.split_whitespace().map(str::to_owned));
            }
        }
        assert!(
            !settings.is_empty(),
            "{UNIT_FILE} has no [Service] settings"
        );
        ServiceSandbox { settings }
    }

    /// The words of `key`'s assignments (`None`: not set).
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.settings.get(key).map(Vec::as_slice)
    }

    /// Whether boolean `key` is on.
    pub fn enabled(&self, key: &str) -> bool {
        self.get(key)
            .and_then(|words| words.last())
            .is_some_and(|word| matches!(word.as_str(), "yes" | "true" | "on" | "1"))
    }

    /// Whether `key` is set to something other than empty or off.
    pub fn sets(&self, key: &str) -> bool {
        self.get(key)
            .and_then(|words| words.last())
            .is_some_and(|word| !matches!(word.as_str(), "no" | "false" | "off" | "0"))
    }

    /// The settings among `keys` that are set (and not off).
    pub fn set_among(&self, keys: &[&str]) -> Vec<String> {
        keys.iter()
            .filter(|key| self.sets(key))
            .map(|key| (*key).to_owned())
            .collect()
    }

    /// The refused settings the unit sets, each with why it is refused.
    pub fn refused(&self) -> Vec<String> {
        REFUSED_SETTINGS
            .iter()
            .filter(|(key, _)| self.sets(key))
            .map(|(key, why)| format!("{key}: {why}"))
            .collect()
    }

    /// `CapabilityBoundingSet=`, as `setpriv` names them (`net_admin`, …).
    pub fn bounding_set(&self) -> Vec<String> {
        let words = self
            .get("CapabilityBoundingSet")
            .unwrap_or_else(|| panic!("{UNIT_FILE} sets no CapabilityBoundingSet"));
        words
            .iter()
            .map(|word| {
                assert!(
                    !word.starts_with('~'),
                    "{UNIT_FILE}: an inverted CapabilityBoundingSet is not reproduced"
                );
                word.strip_prefix("CAP_")
                    .unwrap_or_else(|| panic!("{UNIT_FILE}: {word} is not a capability"))
                    .to_ascii_lowercase()
            })
            .collect()
    }

    /// `command` (a program and its arguments, its environment kept) run under the
    /// unit's reproduced restrictions.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut wrapped = Command::new("setpriv");
        let bounding: Vec<String> = self
            .bounding_set()
            .iter()
            .map(|cap| format!("+{cap}"))
            .collect();
        wrapped.arg(format!("--bounding-set=-all,{}", bounding.join(",")));
        wrapped.arg("--inh-caps=-all");
        assert!(
            self.get("AmbientCapabilities")
                .is_none_or(<[String]>::is_empty),
            "{UNIT_FILE}: ambient capabilities are not reproduced"
        );
        wrapped.arg("--ambient-caps=-all");
        if self.enabled("NoNewPrivileges") {
            wrapped.arg("--no-new-privs");
        }
        // unshare needs CAP_SYS_ADMIN, which the bounding set must hold anyway (mounts,
        // namespaces): were it missing, this fails as the drivers would.
        let mut unshare: Vec<&str> = Vec::new();
        if !self.set_among(MOUNT_NAMESPACE_SETTINGS).is_empty() {
            unshare.extend(["--mount", "--propagation", "slave"]);
        }
        if !self.set_among(SECCOMP_SETTINGS).is_empty() {
            wrapped
                .arg("--")
                .arg("python3")
                .arg(workspace_root().join("e2e/scripts/systemd-seccomp.py"))
                .env(SECCOMP_CONFIG_VARIABLE, self.seccomp_config().to_string());
        }
        let umask = self
            .get("UMask")
            .and_then(|words| words.last())
            .cloned()
            .unwrap_or_else(|| "0022".to_owned());
        wrapped.args([
            "--",
            "sh",
            "-c",
            &format!("umask {umask} && exec \"$@\""),
            "sh",
        ]);
        if !unshare.is_empty() {
            wrapped.arg("unshare").args(unshare).arg("--");
        }
        wrapped.arg(command.get_program());
        wrapped.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// What `e2e/scripts/systemd-seccomp.py` needs to install the filter systemd would
    /// install for the unit's seccomp settings.
    pub fn seccomp_config(&self) -> serde_json::Value {
        let words = |key: &str| self.get(key).map(<[String]>::to_vec).unwrap_or_default();
        let filter = words("SystemCallFilter");
        assert!(
            !filter.is_empty(),
            "{UNIT_FILE}: seccomp settings without an allow-listing SystemCallFilter are \
             not reproduced"
        );
        let mut allow = std::collections::BTreeSet::new();
        for entry in &filter {
            assert!(
                !entry.starts_with('~'),
                "{UNIT_FILE}: a deny-listing SystemCallFilter is not reproduced"
            );
            expand_syscall_group(entry, &mut allow);
        }
        let errno = match words("SystemCallErrorNumber").last().map(String::as_str) {
            None | Some("EPERM") => 1,
            Some("EACCES") => 13,
            Some("ENOSYS") => 38,
            Some(other) => panic!("{UNIT_FILE}: SystemCallErrorNumber={other} is not reproduced"),
        };
        let families = self.get("RestrictAddressFamilies").map(|names| {
            names
                .iter()
                .map(|name| match name.as_str() {
                    "AF_UNIX" => 1,
                    "AF_INET" => 2,
                    "AF_INET6" => 10,
                    "AF_NETLINK" => 16,
                    "AF_PACKET" => 17,
                    other => panic!("{UNIT_FILE}: address family {other} is not reproduced"),
                })
                .collect::<Vec<u32>>()
        });
        const NAMESPACES: &[(&str, u64)] = &[
            ("cgroup", 0x0200_0000),
            ("ipc", 0x0800_0000),
            ("net", 0x4000_0000),
            ("mnt", 0x0002_0000),
            ("pid", 0x2000_0000),
            ("user", 0x1000_0000),
            ("uts", 0x0400_0000),
        ];
        let flag = |name: &str| {
            NAMESPACES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, flag)| *flag)
                .unwrap_or_else(|| panic!("{UNIT_FILE}: unknown namespace {name}"))
        };
        let all: u64 = NAMESPACES.iter().map(|(_, flag)| flag).sum();
        let restrict = words("RestrictNamespaces");
        let deny_ns = match restrict.first().map(String::as_str) {
            None | Some("no" | "false" | "off") => 0,
            Some("yes" | "true" | "on") => all,
            Some(first) if first.starts_with('~') => {
                flag(&first[1..]) | restrict[1..].iter().map(|n| flag(n)).sum::<u64>()
            }
            Some(_) => all & !restrict.iter().map(|n| flag(n)).sum::<u64>(),
        };
        serde_json::json!({
            "allow": allow,
            "errno": errno,
            "families": families,
            "deny_ns": deny_ns,
            "realtime": self.sets("RestrictRealtime"),
            "personality": self.sets("LockPersonality"),
        })
    }

    /// The reproduced settings, for a test's log.
    pub fn reproduced(&self) -> Vec<String> {
        self.set_among(REPRODUCED)
            .into_iter()
            .chain(self.set_among(SECCOMP_SETTINGS))
            .chain(self.set_among(MOUNT_NAMESPACE_SETTINGS))
            .collect()
    }
}

/// The environment variable that carries the filter's configuration to
/// `e2e/scripts/systemd-seccomp.py` (which removes it before the exec).
const SECCOMP_CONFIG_VARIABLE: &str = "E2E_SYSTEMD_SECCOMP";

/// The settings [`ServiceSandbox::wrap`] reproduces in full.
const REPRODUCED: &[&str] = &[
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "NoNewPrivileges",
    "UMask",
];

/// The arguments of a command, for a message; an argument over 200 bytes (the filter's
/// configuration) is elided.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg.len() > 200 {
                format!("<{} bytes>", arg.len())
            } else {
                arg.into_owned()
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// Adds the system calls of `entry` (a name, or an `@group` that
/// `systemd-analyze syscall-filter` lists, groups within it expanded) to `into`.
fn expand_syscall_group(entry: &str, into: &mut std::collections::BTreeSet<String>) {
    if !entry.starts_with('@') {
        into.insert(entry.to_owned());
        return;
    }
    let output = Command::new("systemd-analyze")
        .args(["syscall-filter", entry])
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze syscall-filter {entry}: {e}"));
    assert!(
        output.status.success(),
        "systemd-analyze syscall-filter {entry} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    // The first line names the group; then its members, one a line, comments with #.
    for member in listing.lines().skip(1).map(str::trim) {
        if member.is_empty() || member.starts_with('#') {
            continue;
        }
        expand_syscall_group(member, into);
    }
}
