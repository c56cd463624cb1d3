//! [`HostNetwork`]: the real network seam. The only code here that runs `nft` and
//! `dnsmasq` or writes a forwarding switch; every tool runs through `tokio::process`
//! with a deadline and is killed when dropped, every file access off the async runtime.
//!
//! - nftables: `nft -j list table inet gitvisor` to observe (only when the ruleset
//!   generation moved since the listing recorded in the run dir, `generation.rs`),
//!   `nft -j -f -` with one JSON
//!   document per transaction to change. An apply sends every bridge's transaction joined
//!   in one request (`batch.rs`); transactions sent on their own by bridges applied at
//!   the same time (a joined one that failed, a change applied without prepare) still
//!   share `nft` runs (group commit, see `commit_grouped`). `nft` never sees
//!   another table's name.
//! - forwarding: `/proc/sys/net/ipv4/conf/<interface>/forwarding` (and a managed
//!   bridge's `route_localnet` beside it), in the network
//!   namespace gitvisor runs in; written there, and read from every link's IPv4
//!   devconf in one link dump (`drivers/rtnl`; the files when the dump fails). Uplinks gitvisor turned on are recorded as empty files
//!   under `<run-dir>/network/forwarding/` (a tmpfs, like the switches themselves).
//! - dnsmasq: one per bridge, started with `--conf-file=<run-dir>/network/dhcp/<bridge>/
//!   dnsmasq.conf`; dnsmasq detaches itself once it is serving (the starting process
//!   exits 0 then, or non-zero with the reason on stderr), writes its pid file there,
//!   and is found again through it after gitvisor restarts (see `dnsmasq.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::oneshot;

use super::dnsmasq::{CONFIG_MARKER, DhcpPaths};
use super::error::SeamError;
use super::generation;
use super::nft::{FAMILY, NftCommand, TABLE, Transaction, parse_listing};
use super::seam::{
    DhcpState, Listener, NetworkRequest, NetworkSeam, NetworkState, TableObservation,
};
use crate::drivers::bridge::NetlinkError;
use crate::drivers::rtnl::{self, Dump, DumpSocket};
use crate::model::Protocol;

/// How long `nft` or a starting `dnsmasq` may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(30);
/// How long a dnsmasq gets to exit after SIGTERM, and again after SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

const CONF_DIR: &str = "/proc/sys/net/ipv4/conf";

/// A transaction waiting for the next `nft` run, and where its outcome goes.
type Pending = (Transaction, oneshot::Sender<Result<(), SeamError>>);

/// The host's nftables, forwarding switches and dnsmasq instances.
#[derive(Debug)]
pub struct HostNetwork {
    /// `<run-dir>/network`.
    dir: PathBuf,
    /// Transactions of bridges applied in parallel, waiting for the next `nft` run.
    pending: std::sync::Mutex<Vec<Pending>>,
    /// Held by the one task running `nft` for everything pending.
    committing: tokio::sync::Mutex<()>,
}

impl HostNetwork {
    pub fn new(network_dir: PathBuf) -> Self {
        HostNetwork {
            dir: network_dir,
            pending: std::sync::Mutex::new(Vec::new()),
            committing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn records(&self) -> PathBuf {
        self.dir.join("forwarding")
    }

    /// gitvisor's table: the listing recorded at the current generation when there is
    /// one (nothing in nftables changed since it was read: `generation.rs`), else
    /// `nft -j list table`, recorded for the next observation.
    async fn observe_table(&self) -> Result<TableObservation, SeamError> {
        let before = generation::current().await.unwrap_or_else(|error| {
            tracing::debug!("{error}; listing the nftables table");
            None
        });
        if let Some(key) = &before {
            let (dir, key) = (self.dir.clone(), key.clone());
            if let Some(table) = blocking(move || Ok(generation::recorded(&dir, &key))).await? {
                return Ok(TableObservation::Present(table));
            }
        }
        let listed = self.list_table().await?;
        if let (Some(key), TableObservation::Present(table)) = (before, &listed)
            && matches!(generation::current().await, Ok(Some(after)) if after == key)
        {
            let (dir, table) = (self.dir.clone(), table.clone());
            blocking(move || {
                if let Err(error) = generation::record(&dir, key, table) {
                    tracing::debug!(
                        "cannot record the nftables listing under {}: {error}",
                        dir.display()
                    );
                }
                Ok(())
            })
            .await?;
        }
        Ok(listed)
    }

    async fn list_table(&self) -> Result<TableObservation, SeamError> {
        let args = ["-j", "list", "table", FAMILY, TABLE];
        match run("nft", &args, None).await {
            Ok(stdout) => Ok(TableObservation::Present(parse_listing(&stdout)?)),
            Err(SeamError::ToolMissing { .. }) => Ok(TableObservation::Unavailable(
                "`nft` is not installed".into(),
            )),
            Err(SeamError::Tool { output, .. }) if output.contains("No such file or directory") => {
                Ok(TableObservation::Absent)
            }
            Err(error) => Err(error),
        }
    }

    /// Commits `transaction`, together with those of other bridges applied at the same
    /// time (group commit): while one `nft` runs, the transactions that arrive wait and
    /// then go in one `nft` run, so hundreds of bridges applied in parallel cost a
    /// handful of processes, not one each. Bridges' transactions touch only their own
    /// chains, so they combine; when a combined run fails, each is committed again on
    /// its own, so one bridge's failure is its own.
    async fn commit_grouped(&self, transaction: &Transaction) -> Result<(), SeamError> {
        if transaction.0 == [NftCommand::DeleteTable] {
            let _turn = self.committing.lock().await;
            return self.commit(transaction).await;
        }
        let (answer, mut outcome) = oneshot::channel();
        lock(&self.pending).push((transaction.clone(), answer));
        loop {
            // Answered by whoever ran `nft` for it, or take the turn to run `nft` for
            // everything pending (this one included, unless another turn took it).
            tokio::select! {
                biased;
                result = &mut outcome => {
                    return result.unwrap_or_else(|_| {
                        Err(SeamError::Spawn {
                            tool: "nft",
                            cause: std::io::Error::other(
                                "the task committing this transaction stopped",
                            ),
                        })
                    });
                }
                _turn = self.committing.lock() => {
                    let batch = std::mem::take(&mut *lock(&self.pending));
                    self.commit_batch(batch).await;
                }
            }
        }
    }

    /// Commits `batch` in one `nft` run; when that fails, each on its own.
    async fn commit_batch(&self, mut batch: Vec<Pending>) {
        if batch.len() <= 1 {
            if let Some((transaction, answer)) = batch.pop() {
                let _ = answer.send(self.commit(&transaction).await);
            }
            return;
        }
        tracing::debug!(
            transactions = batch.len(),
            "one nft run for several bridges"
        );
        let combined = Transaction(
            batch
                .iter()
                .flat_map(|(transaction, _)| transaction.0.iter().cloned())
                .collect(),
        );
        match self.commit(&combined).await {
            Ok(()) => {
                for (_, answer) in batch {
                    let _ = answer.send(Ok(()));
                }
            }
            Err(_) => {
                for (transaction, answer) in batch {
                    let _ = answer.send(self.commit(&transaction).await);
                }
            }
        }
    }

    async fn commit(&self, transaction: &Transaction) -> Result<(), SeamError> {
        let commands = transaction.0.as_slice();
        let json = transaction.to_json_text();
        match run("nft", &["-j", "-f", "-"], Some(json)).await {
            Ok(_) => Ok(()),
            // Deleting a table that is already gone is done, when it really is gone.
            Err(error) if commands == [NftCommand::DeleteTable] => match self.list_table().await? {
                TableObservation::Absent => Ok(()),
                _ => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    async fn start_dhcp(&self, bridge: &str) -> Result<(), SeamError> {
        let paths = DhcpPaths::new(&self.dir, bridge);
        if running_dnsmasq(&paths).await?.is_some() {
            return Ok(());
        }
        let log = paths.dir.join("start.err");
        let stderr = blocking({
            let log = log.clone();
            move || {
                std::fs::File::create(&log).map_err(|cause| SeamError::File {
                    operation: "creating",
                    path: log,
                    cause,
                })
            }
        })
        .await?;
        let conf = paths.conf_arg();
        let mut child = Command::new("dnsmasq")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|cause| spawn_error("dnsmasq", "dnsmasq-base", cause))?;
        let command = format!("dnsmasq {conf}");
        let status = match tokio::time::timeout(TOOL_DEADLINE, child.wait()).await {
            Ok(status) => status.map_err(|cause| SeamError::Spawn {
                tool: "dnsmasq",
                cause,
            })?,
            Err(_) => {
                return Err(SeamError::Timeout {
                    command,
                    seconds: TOOL_DEADLINE.as_secs(),
                });
            }
        };
        if !status.success() {
            let output = tokio::fs::read_to_string(&log).await.unwrap_or_default();
            return Err(SeamError::Tool {
                command,
                status: status.to_string(),
                output: output.trim().to_owned(),
            });
        }
        Ok(())
    }

    async fn stop_dhcp(&self, bridge: &str, pid: u32) -> Result<(), SeamError> {
        let paths = DhcpPaths::new(&self.dir, bridge);
        // Only a process that is this bridge's dnsmasq is signalled: a pid can be reused.
        if !is_dnsmasq_of(pid, &paths).await {
            return Ok(());
        }
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            let Ok(raw) = i32::try_from(pid) else {
                return Ok(());
            };
            match kill(Pid::from_raw(raw), signal) {
                Ok(()) => {}
                Err(nix::errno::Errno::ESRCH) => return Ok(()),
                Err(errno) => {
                    return Err(SeamError::File {
                        operation: "signalling dnsmasq",
                        path: PathBuf::from(format!("/proc/{pid}")),
                        cause: std::io::Error::from_raw_os_error(errno as i32),
                    });
                }
            }
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while tokio::time::Instant::now() < deadline {
                if !is_dnsmasq_of(pid, &paths).await {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(SeamError::Unkillable { pid })
    }
}

#[async_trait]
impl NetworkSeam for HostNetwork {
    async fn observe(&self) -> Result<NetworkState, SeamError> {
        let table = self.observe_table().await?;
        let dir = self.dir.clone();
        let records = self.records();
        let dumped = match dump_switches().await {
            Ok(switches) => Some(switches),
            Err(error) => {
                tracing::debug!("{error}; reading the IPv4 switches under {CONF_DIR}");
                None
            }
        };
        let (switches, forwarding_enabled, default_route, dhcp_dirs, listeners) =
            blocking(move || {
                let switches = match dumped {
                    Some(switches) => switches,
                    None => (
                        read_switches("forwarding")?,
                        read_switches("route_localnet")?,
                    ),
                };
                Ok((
                    switches,
                    read_names(&records)?,
                    read_default_route()?,
                    read_dhcp_dirs(&dir)?,
                    read_listeners(),
                ))
            })
            .await?;
        let (forwarding, route_localnet) = switches;
        let mut dhcp = BTreeMap::new();
        for (bridge, config) in dhcp_dirs {
            let paths = DhcpPaths::new(&self.dir, &bridge);
            let running = running_dnsmasq(&paths).await?;
            dhcp.insert(bridge, DhcpState { config, running });
        }
        Ok(NetworkState {
            table,
            forwarding,
            forwarding_enabled,
            route_localnet,
            default_route,
            dhcp,
            listeners,
        })
    }

    async fn send(&self, request: &NetworkRequest) -> Result<(), SeamError> {
        match request {
            NetworkRequest::Nft(transaction) => self.commit_grouped(transaction).await,
            NetworkRequest::SetForwarding { interface, on } => {
                write_forwarding(interface.clone(), *on).await
            }
            NetworkRequest::SetRouteLocalnet { bridge, on } => {
                write_switch(bridge.clone(), "route_localnet", *on).await
            }
            NetworkRequest::EnableUplinkForwarding { interface } => {
                // The record first: a crash in between leaves a record of a switch
                // that is still off, and turning it "back" off is harmless.
                let records = self.records();
                let record = records.join(interface);
                blocking(move || {
                    std::fs::create_dir_all(&records).map_err(|cause| SeamError::File {
                        operation: "creating",
                        path: records.clone(),
                        cause,
                    })?;
                    std::fs::write(&record, b"").map_err(|cause| SeamError::File {
                        operation: "writing",
                        path: record,
                        cause,
                    })
                })
                .await?;
                write_forwarding(interface.clone(), true).await
            }
            NetworkRequest::RestoreUplinkForwarding { interface } => {
                let exists = Path::new(CONF_DIR).join(interface).exists();
                if exists {
                    write_forwarding(interface.clone(), false).await?;
                }
                let record = self.records().join(interface);
                blocking(move || match std::fs::remove_file(&record) {
                    Err(cause) if cause.kind() != std::io::ErrorKind::NotFound => {
                        Err(SeamError::File {
                            operation: "removing",
                            path: record,
                            cause,
                        })
                    }
                    _ => Ok(()),
                })
                .await
            }
            NetworkRequest::WriteDhcpConfig { bridge, config } => {
                let paths = DhcpPaths::new(&self.dir, bridge);
                let config = config.clone();
                blocking(move || write_atomically(&paths.dir, &paths.config(), &config)).await
            }
            NetworkRequest::StartDhcp { bridge } => self.start_dhcp(bridge).await,
            NetworkRequest::StopDhcp { bridge, pid } => self.stop_dhcp(bridge, *pid).await,
            NetworkRequest::RemoveDhcp { bridge } => {
                let dir = DhcpPaths::new(&self.dir, bridge).dir;
                blocking(move || match std::fs::remove_dir_all(&dir) {
                    Err(cause) if cause.kind() != std::io::ErrorKind::NotFound => {
                        Err(SeamError::File {
                            operation: "removing",
                            path: dir,
                            cause,
                        })
                    }
                    _ => Ok(()),
                })
                .await
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `tool args…` (stdin from `input`), returning stdout; a failure carries stderr.
async fn run(
    tool: &'static str,
    args: &[&str],
    input: Option<String>,
) -> Result<String, SeamError> {
    let command = format!("{tool} {}", args.join(" "));
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|cause| spawn_error(tool, "nftables", cause))?;
    let work = async {
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|cause| SeamError::Spawn { tool, cause })?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|cause| SeamError::Spawn { tool, cause })
    };
    let output = tokio::time::timeout(TOOL_DEADLINE, work)
        .await
        .map_err(|_| SeamError::Timeout {
            command: command.clone(),
            seconds: TOOL_DEADLINE.as_secs(),
        })??;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(SeamError::Tool {
            command,
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn spawn_error(tool: &'static str, package: &'static str, cause: std::io::Error) -> SeamError {
    if cause.kind() == std::io::ErrorKind::NotFound {
        SeamError::ToolMissing { tool, package }
    } else {
        SeamError::Spawn { tool, cause }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SeamError> + Send + 'static,
) -> Result<T, SeamError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| SeamError::Spawn {
            tool: "a blocking file task",
            cause: std::io::Error::other(join.to_string()),
        })?
}

async fn write_forwarding(interface: String, on: bool) -> Result<(), SeamError> {
    write_switch(interface, "forwarding", on).await
}

/// Writes the IPv4 switch `name` (`forwarding`, `route_localnet`) of `interface`.
async fn write_switch(interface: String, name: &'static str, on: bool) -> Result<(), SeamError> {
    blocking(move || {
        let path = Path::new(CONF_DIR).join(&interface).join(name);
        std::fs::write(&path, if on { "1" } else { "0" }).map_err(|cause| SeamError::File {
            operation: "writing",
            path,
            cause,
        })
    })
    .await
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> SeamError + '_ {
    move |cause| SeamError::File {
        operation: "reading",
        path: path.to_owned(),
        cause,
    }
}

/// Every interface's `forwarding` and `route_localnet` switches, read from the IPv4
/// devconf of one link dump (`drivers/rtnl`): the values `/proc/sys/net/ipv4/conf/
/// <interface>/` prints, for the same interfaces (those with IPv4 configuration),
/// without two file reads per interface.
async fn dump_switches() -> Result<(Switches, Switches), NetlinkError> {
    let socket = DumpSocket::open()?;
    let (mut forwarding, mut route_localnet) = (BTreeMap::new(), BTreeMap::new());
    socket
        .dump(Dump::Links, |body| {
            if let Some((name, switches)) = rtnl::ipv4_switches_of(body) {
                forwarding.insert(name.clone(), switches.forwarding);
                route_localnet.insert(name, switches.route_localnet);
            }
        })
        .await?;
    Ok((forwarding, route_localnet))
}

type Switches = BTreeMap<String, bool>;

/// Every interface's IPv4 switch `switch` (`forwarding`, `route_localnet`; `all` and
/// `default` are not interfaces), from `/proc/sys`: where the link dump cannot be read.
fn read_switches(switch: &str) -> Result<BTreeMap<String, bool>, SeamError> {
    let dir = Path::new(CONF_DIR);
    let mut switches = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
        let entry = entry.map_err(read_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "all" || name == "default" {
            continue;
        }
        let path = entry.path().join(switch);
        match std::fs::read_to_string(&path) {
            Ok(value) => {
                switches.insert(name, value.trim() == "1");
            }
            // The interface went away while listing.
            Err(cause) if cause.kind() == std::io::ErrorKind::NotFound => {}
            Err(cause) => return Err(read_error(&path)(cause)),
        }
    }
    Ok(switches)
}

/// The names of the files in `dir` (none when it does not exist).
fn read_names(dir: &Path) -> Result<BTreeSet<String>, SeamError> {
    match std::fs::read_dir(dir) {
        Err(cause) if cause.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(cause) => Err(read_error(dir)(cause)),
        Ok(entries) => entries
            .map(|entry| {
                entry
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .map_err(read_error(dir))
            })
            .collect(),
    }
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
fn read_default_route() -> Result<Option<String>, SeamError> {
    let path = Path::new("/proc/net/route");
    let table = std::fs::read_to_string(path).map_err(read_error(path))?;
    Ok(table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [iface, "00000000", _, _, _, _, _, "00000000", ..] => Some((*iface).to_owned()),
            _ => None,
        }
    }))
}

/// Each bridge directory under `<dir>/dhcp`, with its configuration when it is one
/// gitvisor wrote.
fn read_dhcp_dirs(dir: &Path) -> Result<Vec<(String, Option<String>)>, SeamError> {
    let dhcp = dir.join("dhcp");
    let mut found = Vec::new();
    for bridge in read_names(&dhcp)? {
        let config = DhcpPaths::new(dir, &bridge).config();
        let text = match std::fs::read_to_string(&config) {
            Ok(text) => Some(text).filter(|t| t.starts_with(CONFIG_MARKER)),
            Err(cause) if cause.kind() == std::io::ErrorKind::NotFound => None,
            Err(cause) => return Err(read_error(&config)(cause)),
        };
        found.push((bridge, text));
    }
    Ok(found)
}

/// The pid of the dnsmasq running on `paths`' configuration, if one does.
async fn running_dnsmasq(paths: &DhcpPaths) -> Result<Option<u32>, SeamError> {
    let pid_file = paths.pid_file();
    let pid = match tokio::fs::read_to_string(&pid_file).await {
        Ok(text) => text.trim().parse::<u32>().ok(),
        Err(cause) if cause.kind() == std::io::ErrorKind::NotFound => None,
        Err(cause) => return Err(read_error(&pid_file)(cause)),
    };
    match pid {
        Some(pid) if is_dnsmasq_of(pid, paths).await => Ok(Some(pid)),
        _ => Ok(None),
    }
}

/// Whether `pid` is alive and runs on `paths`' configuration: gitvisor's dnsmasq for
/// that bridge, not a reused pid.
async fn is_dnsmasq_of(pid: u32, paths: &DhcpPaths) -> bool {
    let Ok(cmdline) = tokio::fs::read(format!("/proc/{pid}/cmdline")).await else {
        return false;
    };
    let stat = tokio::fs::read_to_string(format!("/proc/{pid}/stat"))
        .await
        .unwrap_or_default();
    // A zombie has exited; its command line is gone anyway, but say so.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let conf = paths.conf_arg();
    !zombie && cmdline.split(|b| *b == 0).any(|arg| arg == conf.as_bytes())
}

fn write_atomically(dir: &Path, path: &Path, text: &str) -> Result<(), SeamError> {
    std::fs::create_dir_all(dir).map_err(|cause| SeamError::File {
        operation: "creating",
        path: dir.to_owned(),
        cause,
    })?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).map_err(|cause| SeamError::File {
        operation: "writing",
        path: temporary.clone(),
        cause,
    })?;
    std::fs::rename(&temporary, path).map_err(|cause| SeamError::File {
        operation: "renaming into place",
        path: path.to_owned(),
        cause,
    })
}

/// The listening sockets of this network namespace: TCP sockets in `LISTEN` (state `0A`)
/// and bound UDP sockets (`07`) of `/proc/net/{tcp,tcp6,udp,udp6}`. A table that cannot
/// be read (IPv6 disabled) contributes nothing.
fn read_listeners() -> Vec<Listener> {
    let tables = [
        ("/proc/net/tcp", Protocol::Tcp, "0A"),
        ("/proc/net/tcp6", Protocol::Tcp, "0A"),
        ("/proc/net/udp", Protocol::Udp, "07"),
        ("/proc/net/udp6", Protocol::Udp, "07"),
    ];
    let mut listeners = Vec::new();
    for (path, protocol, listening) in tables {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        listeners.extend(parse_listeners(&text, protocol, listening));
    }
    listeners.sort();
    listeners.dedup();
    listeners
}

/// The sockets of one `/proc/net` table in state `listening`.
fn parse_listeners(text: &str, protocol: Protocol, listening: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != listening {
                return None;
            }
            let (address, port) = local.split_once(':')?;
            Some(Listener {
                protocol,
                address: proc_address(address)?,
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

/// An address as `/proc/net` prints it: the kernel's 32-bit words in hex, each in host
/// byte order.
fn proc_address(hex: &str) -> Option<std::net::IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn proc_net_tables_are_read_as_the_kernel_prints_them() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
                   1: 0100007F:0016 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_listeners(tcp, Protocol::Tcp, "0A"),
            [Listener {
                protocol: Protocol::Tcp,
                address: "127.0.0.1".parse().unwrap(),
                port: 8080,
            }]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n   \
                    0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_listeners(tcp6, Protocol::Tcp, "0A")[0].to_string(),
            "tcp [::]:22"
        );
    }
}
