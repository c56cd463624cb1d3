//! Helpers for the network-mode scenarios (`e2e/tests/network.rs`): a small lab of
//! namespaces around the test's own "host" namespace.
//!
//! ```text
//!   outside (192.0.2.2/24) ── veth ── up0 (192.0.2.1/24, default route) ─┐
//!                                                                       host (gitvisor)
//!   guest  (eth0) ─────────── veth ── <host side>, enslaved to a bridge ─┘
//! ```
//!
//! The "outside" namespace stands in for the LAN and the internet; a "guest" is a
//! namespace with one veth whose other end the test enslaves to a managed bridge, marked
//! `gitvisor:e2e-guest` in its `ifalias` like a VM's tap or a container's veth, so the
//! Bridge driver never releases it. Servers are busybox `httpd` (a CGI script echoes the
//! client's address, so the far side shows what source address it saw); clients are
//! busybox `nc` (as an HTTP client), `ping`, `udhcpc` and `nslookup`.
//!
//! Cleanup: [`Lab`] kills every process it started and every process left in its
//! namespaces *and in the test's host namespace* (the dnsmasq gitvisor starts there),
//! then deletes its namespaces, also when the test panics. Declare it after the
//! [`TestEnv`] so it is dropped first.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Netns, Outcome, TestEnv, current_test_name, run_command, skip};

/// The host's address on the link to the outside.
pub const HOST_UPLINK_ADDRESS: &str = "192.0.2.1";
/// The outside namespace's address.
pub const OUTSIDE_ADDRESS: &str = "192.0.2.2";
/// The host's end of the link to the outside (the default route's interface).
pub const UPLINK: &str = "up0";

/// The busybox applets the scenarios use.
const APPLETS: [&str; 6] = ["httpd", "nc", "ping", "udhcpc", "nslookup", "sh"];

/// The namespaces, servers and files of one network scenario.
pub struct Lab<'a> {
    env: &'a TestEnv,
    namespaces: Vec<Netns>,
    servers: Vec<Child>,
    files: TempDir,
}

impl<'a> Lab<'a> {
    /// A lab around `env`, or `None` (after a loud SKIPPED line) when this machine lacks
    /// `nft`, `dnsmasq` or busybox with the applets the scenarios need.
    pub fn new(env: &'a TestEnv) -> Option<Lab<'a>> {
        let test = current_test_name(env.test());
        for (tool, args) in [("nft", ["--version"]), ("dnsmasq", ["--version"])] {
            if !runs(tool, args) {
                skip(
                    &test,
                    &format!("needs {tool}: apt install nftables dnsmasq-base"),
                );
                return None;
            }
        }
        let listing = Command::new("busybox")
            .arg("--list")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if let Some(missing) = APPLETS
            .iter()
            .find(|applet| !listing.lines().any(|line| line == **applet))
        {
            skip(
                &test,
                &format!("needs busybox with {missing}: apt install busybox-static"),
            );
            return None;
        }
        let files = tempfile::Builder::new()
            .prefix("gv-e2e-lab-")
            .tempdir()
            .expect("cannot create a temporary directory");
        Some(Lab {
            env,
            namespaces: Vec::new(),
            servers: Vec::new(),
            files,
        })
    }

    pub fn host(&self) -> &str {
        self.env.netns()
    }

    /// Creates the outside namespace, linked to the host by `up0`, with the host's
    /// default route through it; returns its name.
    pub fn outside(&mut self) -> String {
        let outside = Netns::create(&format!("{}-out", self.env.test()));
        let name = outside.name().to_owned();
        self.namespaces.push(outside);
        let host = self.host().to_owned();
        self.ip(
            &host,
            &[
                "link", "add", UPLINK, "type", "veth", "peer", "name", "out0", "netns", &name,
            ],
        );
        self.ip(
            &host,
            &[
                "addr",
                "add",
                &format!("{HOST_UPLINK_ADDRESS}/24"),
                "dev",
                UPLINK,
            ],
        );
        self.ip(&host, &["link", "set", UPLINK, "up"]);
        self.ip(&host, &["route", "add", "default", "via", OUTSIDE_ADDRESS]);
        self.ip(
            &name,
            &[
                "addr",
                "add",
                &format!("{OUTSIDE_ADDRESS}/24"),
                "dev",
                "out0",
            ],
        );
        self.ip(&name, &["link", "set", "out0", "up"]);
        self.ip(&name, &["link", "set", "lo", "up"]);
        name
    }

    /// Creates a guest namespace whose `eth0` is a veth to `host_side` in the host
    /// namespace (marked as a workload's link), with `mac` when given; returns its name.
    pub fn guest(&mut self, host_side: &str, mac: Option<&str>) -> String {
        let guest = Netns::create(&format!("{}-{host_side}", self.env.test()));
        let name = guest.name().to_owned();
        self.namespaces.push(guest);
        let host = self.host().to_owned();
        self.ip(
            &host,
            &[
                "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        self.ip(
            &host,
            &["link", "set", host_side, "alias", "gitvisor:e2e-guest"],
        );
        if let Some(mac) = mac {
            self.ip(&name, &["link", "set", "eth0", "address", mac]);
        }
        self.ip(&name, &["link", "set", "eth0", "up"]);
        self.ip(&name, &["link", "set", "lo", "up"]);
        name
    }

    /// Enslaves the guest's host side to `bridge` and brings it up.
    pub fn attach(&self, host_side: &str, bridge: &str) {
        let host = self.host().to_owned();
        self.ip(&host, &["link", "set", host_side, "master", bridge]);
        self.ip(&host, &["link", "set", host_side, "up"]);
    }

    /// Gives the guest a fixed address and a default route.
    pub fn address(&self, guest: &str, cidr: &str, gateway: &str) {
        self.ip(guest, &["addr", "add", cidr, "dev", "eth0"]);
        self.ip(guest, &["route", "add", "default", "via", gateway]);
    }

    /// `ip -n NS ARGS`, which must succeed.
    #[track_caller]
    pub fn ip(&self, namespace: &str, args: &[&str]) -> Outcome {
        let mut command = Command::new("ip");
        command.args(["-n", namespace]).args(args);
        run_command(command).expect_code(0)
    }

    /// Runs `ARGS` inside `namespace`.
    pub fn exec<I, S>(&self, namespace: &str, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace]).args(args);
        run_command(command)
    }

    /// `nft ARGS` in the host namespace.
    pub fn nft(&self, args: &[&str]) -> Outcome {
        let mut command = vec!["nft"];
        command.extend_from_slice(args);
        self.exec(self.host(), command)
    }

    /// `busybox ping` once from `namespace`: whether `address` answered.
    pub fn pings(&self, namespace: &str, address: &str) -> bool {
        self.exec(
            namespace,
            ["busybox", "ping", "-c", "1", "-W", "2", address],
        )
        .code
            == Some(0)
    }

    /// An HTTP GET of `path` at `address:port` from `namespace`, through busybox `nc`
    /// (busybox `wget` crashes under `ip netns exec` on the CI machine); the response
    /// body when the server answered `200 OK`.
    pub fn http_get(
        &self,
        namespace: &str,
        address: &str,
        port: u16,
        path: &str,
    ) -> Result<String, Outcome> {
        let request = format!(
            "printf 'GET {path} HTTP/1.0\\r\\nHost: {address}\\r\\n\\r\\n' | busybox nc -w 3 {address} {port}"
        );
        let outcome = self.exec(namespace, ["sh", "-c", &request]);
        let ok = outcome.code == Some(0)
            && outcome
                .stdout
                .lines()
                .next()
                .is_some_and(|status| status.contains(" 200 "));
        match outcome
            .stdout
            .split_once("\r\n\r\n")
            .or(outcome.stdout.split_once("\n\n"))
        {
            Some((_, body)) if ok => Ok(body.trim().to_owned()),
            _ => Err(outcome),
        }
    }

    /// Starts busybox `httpd` in `namespace` on `address:port`, serving `index.html`
    /// with `text` and `/cgi-bin/ip`, which answers the client's address; waits until it
    /// answers from `namespace` itself.
    pub fn serve(&mut self, namespace: &str, address: &str, port: u16, text: &str) {
        let listen = format!("{address}:{port}");
        let root = self
            .files
            .path()
            .join(format!("www-{}", self.servers.len()));
        std::fs::create_dir_all(root.join("cgi-bin")).expect("cannot create the web root");
        std::fs::write(root.join("index.html"), format!("{text}\n")).expect("index.html");
        let script = root.join("cgi-bin/ip");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
        )
        .expect("cgi script");
        make_executable(&script);
        let child = Command::new("ip")
            .args([
                "netns", "exec", namespace, "busybox", "httpd", "-f", "-p", &listen, "-h",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start busybox httpd");
        self.servers.push(child);
        let local = if address == "0.0.0.0" {
            "127.0.0.1"
        } else {
            address
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = match self.http_get(namespace, local, port, "/") {
                Ok(_) => return,
                Err(outcome) => outcome,
            };
            assert!(
                Instant::now() < deadline,
                "httpd in {namespace} never answered on {listen}\n{outcome}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs busybox `udhcpc` once on the guest's `eth0`; the lease's address is
    /// configured with a default route, and returned.
    pub fn dhcp(&self, guest: &str) -> Result<String, Outcome> {
        let script = self.files.path().join("udhcpc.script");
        let result = self.files.path().join(format!("lease-{guest}"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr flush dev \"$interface\"\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  [ -n \"$router\" ] && ip route replace default via \"$router\"\n  echo \"$ip\" > {}\nesac\nexit 0\n",
                result.display()
            ),
        )
        .expect("udhcpc script");
        make_executable(&script);
        let outcome = self.exec(
            guest,
            [
                OsStr::new("busybox"),
                OsStr::new("udhcpc"),
                OsStr::new("-i"),
                OsStr::new("eth0"),
                OsStr::new("-n"),
                OsStr::new("-q"),
                OsStr::new("-f"),
                OsStr::new("-t"),
                OsStr::new("10"),
                OsStr::new("-T"),
                OsStr::new("1"),
                OsStr::new("-s"),
                script.as_os_str(),
            ],
        );
        match std::fs::read_to_string(&result) {
            Ok(address) if outcome.code == Some(0) => Ok(address.trim().to_owned()),
            _ => Err(outcome),
        }
    }

    /// The pids of every dnsmasq running in the host namespace.
    pub fn dnsmasq_pids(&self) -> Vec<u32> {
        namespace_pids(self.host())
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "dnsmasq")
                    && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .unwrap_or_default()
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .collect()
    }

    /// `/proc/sys/net/ipv4/conf/IFACE/forwarding` in the host namespace.
    pub fn forwarding(&self, interface: &str) -> String {
        self.exec(
            self.host(),
            [
                "cat",
                &format!("/proc/sys/net/ipv4/conf/{interface}/forwarding"),
            ],
        )
        .expect_code(0)
        .stdout
        .trim()
        .to_owned()
    }

    /// Writes a sysctl of the host namespace (inside it: never the root namespace's).
    pub fn sysctl(&self, path: &str, value: &str) {
        self.exec(
            self.host(),
            ["sh", "-c", &format!("echo {value} > /proc/sys/{path}")],
        )
        .expect_code(0);
    }

    pub fn files(&self) -> &Path {
        self.files.path()
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let mut namespaces: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| n.name().to_owned())
            .collect();
        namespaces.push(self.env.netns().to_owned());
        for namespace in namespaces {
            for pid in namespace_pids(&namespace) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// The pids of the processes in `namespace` (`ip netns pids`).
pub fn namespace_pids(namespace: &str) -> Vec<u32> {
    let mut command = Command::new("ip");
    command.args(["netns", "pids", namespace]);
    run_command(command)
        .stdout
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

fn runs(tool: &str, args: [&str; 1]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn make_executable(path: &PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("cannot make a script executable");
}

/// What one connection from `namespace` to `address:port` reads (busybox `nc`, 3 s).
pub fn tcp_read(namespace: &str, address: &str, port: u16) -> Outcome {
    let script = format!("busybox nc -w 3 {address} {port} </dev/null");
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace, "sh", "-c", &script]);
    run_command(command)
}

/// Waits until a connection from `namespace` to `address:port` reads `answer` (a server
/// behind a published port may still be starting); panics with the last try past
/// `within`.
#[track_caller]
pub fn wait_for_tcp_answer(
    namespace: &str,
    address: &str,
    port: u16,
    answer: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let outcome = tcp_read(namespace, address, port);
        if outcome.code == Some(0) && outcome.stdout.trim() == answer {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address}:{port} never answered {answer:?} from {namespace}\n{outcome}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that `plan` (JSON) moves a publication in place: `bridge` is updated, its
/// `nftables` field now holds `rule`, and the guest `kind`/`name` stays as it is.
#[track_caller]
pub fn assert_publication_moves_in_place(
    plan: &serde_json::Value,
    bridge: &str,
    rule: &str,
    kind: &str,
    name: &str,
) {
    let change = crate::change(plan, "Bridge", bridge);
    assert_eq!(change["action"], "update", "{plan:#}");
    let rules = crate::field(change, "nftables").expect("the bridge's rules change");
    assert!(rules["new"].to_string().contains(rule), "{plan:#}");
    assert_eq!(
        crate::change(plan, kind, name)["action"],
        "noop",
        "{plan:#}"
    );
}
