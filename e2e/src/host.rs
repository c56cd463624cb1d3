//! Reading the host independently of gitvisor: links and addresses through iproute2's
//! JSON (`ip -d -j addr show`) into [`Link`], kernel feature probes, and a stream of link
//! events (`ip monitor link`).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::env::TestEnv;
use crate::process::{Outcome, run_command};
use crate::report::loud;

/// The marker gitvisor writes into a managed bridge's `ifalias` (README "Ownership").
pub const MARKER: &str = "gitvisor:managed";

/// Runs `ip ARGS` (in the root namespace, or with `-n NS` among ARGS); panics unless it
/// succeeds.
#[track_caller]
pub fn ip<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("ip");
    command.args(args);
    run_command(command).expect_code(0)
}

impl TestEnv {
    /// Runs `ip -n NS ARGS`, expecting success.
    #[track_caller]
    pub fn ip<I, S>(&self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("ip");
        command.args(["-n", self.netns()]).args(args);
        run_command(command).expect_code(0)
    }

    /// Every link in the namespace, as the kernel reports it.
    #[track_caller]
    pub fn links(&self) -> Vec<Link> {
        let outcome = self.ip(["-d", "-j", "addr", "show"]);
        let value = outcome.json();
        let Value::Array(items) = value else {
            panic!("`ip -j addr show` did not print an array\n{outcome}");
        };
        items.iter().map(Link::from_json).collect()
    }

    /// The link called `name`, if any.
    #[track_caller]
    pub fn link(&self, name: &str) -> Option<Link> {
        self.links().into_iter().find(|l| l.name == name)
    }

    /// The link called `name`; panics (with the namespace dump) when absent.
    #[track_caller]
    pub fn expect_link(&self, name: &str) -> Link {
        match self.link(name) {
            Some(link) => link,
            None => panic!("no link {name} in namespace {}", self.netns()),
        }
    }

    /// Names of links other than `lo`.
    #[track_caller]
    pub fn link_names(&self) -> BTreeSet<String> {
        self.links()
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n != "lo")
            .collect()
    }

    /// Whether this kernel lets a bridge turn on `vlan_filtering`
    /// (`CONFIG_BRIDGE_VLAN_FILTERING`; the CI machine's kernel lacks it). Probed once per
    /// test process with a throwaway bridge in this namespace.
    pub fn kernel_supports_vlan_filtering(&self) -> bool {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            let mut command = Command::new("ip");
            command.args([
                "-n",
                self.netns(),
                "link",
                "add",
                "gv-probe",
                "type",
                "bridge",
                "vlan_filtering",
                "1",
            ]);
            let supported = run_command(command).code == Some(0);
            if supported {
                self.ip(["link", "del", "gv-probe"]);
            } else {
                loud(
                    "NOTE: this kernel refuses bridge vlan_filtering (no CONFIG_BRIDGE_VLAN_FILTERING); \
                     tests that ask for it expect the refusal",
                );
            }
            supported
        })
    }

    /// Starts `ip -n NS -o monitor link` and streams the name of every link that an
    /// event mentions. Kill the returned child when done.
    pub fn monitor_links(&self) -> (Child, mpsc::Receiver<String>) {
        let mut command = Command::new("ip");
        command
            .args(["-n", self.netns(), "-o", "monitor", "link"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("cannot start `ip monitor link`");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "12: gvk3: <BROADCAST,…> …" or "Deleted 12: gvk3: …"
                let line = line.strip_prefix("Deleted ").unwrap_or(&line);
                let Some(name) = line.split_whitespace().nth(1) else {
                    continue;
                };
                let name = name.trim_end_matches(':');
                let name = name.split('@').next().unwrap_or(name);
                if tx.send(name.to_owned()).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// [`TestEnv::monitor_links`], returned once the monitor is known to be subscribed
    /// (it may subscribe after its first events): a probe link is poked (up, down, …:
    /// each flag change is an `RTM_NEWLINK` event, unlike an alias change on a down link)
    /// until the monitor reports it, then deleted again.
    pub fn synced_link_monitor(&self) -> (Child, mpsc::Receiver<String>) {
        const PROBE: &str = "gv-sync";
        let (child, events) = self.monitor_links();
        self.ip(["link", "add", PROBE, "type", "bridge"]);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut up = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "`ip monitor link` never reported {PROBE}"
            );
            match events.recv_timeout(Duration::from_millis(50)) {
                Ok(seen) if seen == PROBE => break,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` exited"),
            }
            up = !up;
            self.ip(["link", "set", PROBE, if up { "up" } else { "down" }]);
        }
        self.ip(["link", "del", PROBE]);
        (child, events)
    }

    /// Runs `gitvisor apply DIR` and SIGKILLs it once the kernel has reported
    /// `kill_after` distinct links whose name starts with `prefix` (timed from the
    /// kernel's side through [`TestEnv::synced_link_monitor`]). Returns whether it was
    /// killed (`false`: apply finished first) and the matching links seen by then.
    /// Panics when apply makes no progress for 90 s.
    pub fn apply_killed_after_links(
        &self,
        dir: &str,
        prefix: &str,
        kill_after: usize,
    ) -> (bool, BTreeSet<String>) {
        let (mut monitor, events) = self.synced_link_monitor();
        let mut child = self.spawn_apply(dir);
        let started = Instant::now();
        let mut seen = BTreeSet::new();
        let killed = loop {
            match events.recv_timeout(Duration::from_millis(2)) {
                Ok(name) if name.starts_with(prefix) => {
                    seen.insert(name);
                }
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` stopped"),
            }
            if seen.len() >= kill_after {
                // Child::kill is SIGKILL; `ip netns exec` execs gitvisor in place, so this
                // is gitvisor's own pid.
                child.kill().expect("cannot SIGKILL gitvisor");
                let _ = child.wait();
                break true;
            }
            if let Some(status) = child.try_wait().expect("cannot wait for gitvisor") {
                eprintln!(
                    "apply finished ({status}) before {kill_after} {prefix}* links were seen"
                );
                break false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "apply made no progress: {} {prefix}* links after 90 s",
                seen.len()
            );
        };
        let _ = monitor.kill();
        let _ = monitor.wait();
        (killed, seen)
    }
}

/// One link as `ip -d -j addr show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u64,
    pub name: String,
    pub mtu: u64,
    /// Interface flags (`UP`, `LOWER_UP`, `BROADCAST`, …).
    pub flags: Vec<String>,
    /// `ifalias`, where set.
    pub alias: Option<String>,
    /// `linkinfo.info_kind` (`bridge`, `veth`, …).
    pub kind: Option<String>,
    /// Bridge `vlan_filtering` (0/1) where the link is a bridge.
    pub vlan_filtering: Option<u64>,
    /// Bridge `stp_state` where the link is a bridge.
    pub stp_state: Option<u64>,
    /// The link's master (for ports).
    pub master: Option<String>,
    /// Addresses as `addr/prefix`, link-local (`scope link`) ones left out because the
    /// kernel adds those by itself; sorted.
    pub addresses: Vec<String>,
}

impl Link {
    fn from_json(value: &Value) -> Link {
        let info_data = &value["linkinfo"]["info_data"];
        let mut addresses: Vec<String> = value["addr_info"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|a| a["scope"].as_str() != Some("link"))
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    a["local"].as_str()?,
                    a["prefixlen"].as_u64()?
                ))
            })
            .collect();
        addresses.sort();
        Link {
            ifindex: value["ifindex"].as_u64().unwrap_or_default(),
            name: value["ifname"].as_str().unwrap_or_default().to_owned(),
            mtu: value["mtu"].as_u64().unwrap_or_default(),
            flags: value["flags"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect(),
            alias: value["ifalias"].as_str().map(str::to_owned),
            kind: value["linkinfo"]["info_kind"].as_str().map(str::to_owned),
            vlan_filtering: info_data["vlan_filtering"].as_u64(),
            stp_state: info_data["stp_state"].as_u64(),
            master: value["master"].as_str().map(str::to_owned),
            addresses,
        }
    }

    /// Administratively up (`ip link set up`).
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    /// Carries gitvisor's ownership marker.
    pub fn is_marked(&self) -> bool {
        self.alias.as_deref() == Some(MARKER)
    }

    /// Whether `addr/prefix` is configured.
    pub fn has_address(&self, cidr: &str) -> bool {
        self.addresses.iter().any(|a| a == cidr)
    }
}

/// Sorted `addr/prefix` strings, for comparing with [`Link::addresses`].
pub fn cidrs(list: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    out.sort();
    out
}
