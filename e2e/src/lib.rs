//! End-to-end harness for gitvisor: runs the real `gitvisor` binary against the real
//! kernel, each test inside a network namespace of its own (DESIGN §5, §6).
//!
//! # How a test uses it
//!
//! ```no_run
//! use gitvisor_e2e::{Manifests, TestEnv};
//!
//! let Some(env) = TestEnv::new("my_test") else { return }; // prints SKIPPED when not root
//! let manifests = Manifests::from_example("quickstart");
//! env.gitvisor(&["apply", manifests.path_str()]).expect_code(0);
//! let link = env.link("br-lab").expect("br-lab exists");
//! assert!(link.is_up());
//! ```
//!
//! # What it guarantees
//!
//! - **Which binary.** `$GITVISOR_BIN` when set, else `<workspace>/target/debug/gitvisor`
//!   (honouring `$CARGO_TARGET_DIR`). The suite does not build it: run
//!   `cargo build -p gitvisor` first. A missing binary is a panic that says so; a binary
//!   older than the newest file under `reconciler/src` is reported loudly on stderr
//!   (the suite would otherwise be testing yesterday's code).
//! - **Isolation.** [`TestEnv::new`] creates a network namespace
//!   `gv-e2e-<test>-<pid>` (unique per test and per test process, so tests run in
//!   parallel), a temporary `--state-dir` and a temporary `--run-dir`. gitvisor runs as
//!   `ip netns exec NS gitvisor --state-dir … --run-dir … --host e2e-host …` with the
//!   `GITVISOR_*` environment variables cleared and `NO_COLOR=1`, so nothing from the
//!   caller's environment or from the root namespace leaks in.
//! - **Independent observation.** Kernel state is read with iproute2
//!   (`ip -n NS -d -j addr show`), never through gitvisor, and parsed into [`Link`].
//! - **Cleanup.** The namespace is deleted in `Drop` (which also runs when the test
//!   panics); deleting a namespace destroys the bridges inside it. When a test fails, the
//!   namespace's links are dumped to stderr first. Namespaces left behind by a test
//!   process that was itself killed (`gv-e2e-*-<pid>` whose pid no longer runs) are
//!   removed the next time the suite starts a namespace.
//! - **Skips are loud.** Without root, [`TestEnv::new`] prints
//!   `SKIPPED (needs root): <test>` to stderr and returns `None`; the test returns early.
//!   The line is written past libtest's output capture ([`loud`]), so it shows even
//!   though libtest reports the test as `ok`. Being root but unable to create a
//!   namespace is a failure, not a skip.
//! - **Kernel differences are probed, not assumed.** The CI kernel has no
//!   `CONFIG_BRIDGE_VLAN_FILTERING`; [`TestEnv::kernel_supports_vlan_filtering`] probes
//!   it, [`TestEnv::quickstart`] drops `vlanFiltering: true` from its copy of the example
//!   where unsupported (with a loud NOTE), and a dedicated test checks that gitvisor
//!   fails that bridge cleanly there.
//! - **Expectations come from the manifests.** [`declared_bridges`] reads a revision
//!   with a plain YAML parser (not gitvisor's loader) and
//!   [`DeclaredBridge::assert_realised_by`] compares it with the kernel, so editing an
//!   example does not silently weaken the tests.
//! - **No hangs.** Every command has a deadline ([`COMMAND_TIMEOUT`]); past it the
//!   process is killed and the test fails with whatever output it had.
//!
//! # The suite (`e2e/tests/`)
//!
//! - `bridges.rs`: create from examples/quickstart, in-place update, drift repair, prune,
//!   a lost store never deletes, conflict then adoption, vlan filtering vs the kernel.
//! - `rejected.rs`: a bad file next to a good one rejects the whole revision, with
//!   `file:line:col` pointing at the bad line (syntax, unknown field, dangling
//!   references, cycle).
//! - `crash.rs`: `apply` killed with SIGKILL part-way (timed by `ip monitor link`), the
//!   next `apply` converges exactly.
//! - `graph.rs`: `graph --format dot|mermaid` edges of examples/homelab (no root needed).
//!
//! Run with `cargo build -p gitvisor && cargo test -p gitvisor-e2e`. One thing to know
//! about timing: the kernel tears a namespace down asynchronously, ~15-25 ms per bridge
//! on the CI machine, and creating the next namespace waits for it, so the test binary
//! that runs after `crash.rs` (200 bridges) starts a few seconds late.

pub mod containers;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

/// How long one command (gitvisor or ip) may run before the harness kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// The `--host` every test passes, so `metadata.host` selection does not depend on the
/// machine's hostname.
pub const TEST_HOST: &str = "e2e-host";

/// The marker gitvisor writes into a managed bridge's `ifalias` (DESIGN §3).
pub const MARKER: &str = "gitvisor:managed";

/// The file of examples/quickstart.
pub const QUICKSTART_FILE: &str = "bridges.yaml";

/// Prefix of every namespace this suite creates.
const NS_PREFIX: &str = "gv-e2e-";

// ---------------------------------------------------------------------------------------
// Locating things
// ---------------------------------------------------------------------------------------

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent directory")
        .to_path_buf()
}

/// `examples/<name>` in the workspace.
pub fn example_dir(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// The gitvisor binary under test: `$GITVISOR_BIN`, else the workspace's debug build.
/// Panics with instructions when it does not exist.
pub fn gitvisor_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = match std::env::var_os("GITVISOR_BIN") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join("target"));
                let target = if target.is_absolute() {
                    target
                } else {
                    workspace_root().join(target)
                };
                target.join("debug").join("gitvisor")
            }
        };
        if !bin.is_file() {
            panic!(
                "the gitvisor binary was not found at {}\n\
                 build it first with `cargo build -p gitvisor`, or point GITVISOR_BIN at one",
                bin.display()
            );
        }
        warn_if_stale(&bin);
        bin
    })
}

/// Prints a loud warning when the binary is older than the newest file of the reconciler
/// crate's `src/` (or its Cargo.toml) (only when testing the workspace's own build).
fn warn_if_stale(bin: &Path) {
    if std::env::var_os("GITVISOR_BIN").is_some() {
        return;
    }
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let crate_dir = workspace_root().join("reconciler");
    let newest = newest_mtime(&crate_dir.join("src")).max(
        crate_dir
            .join("Cargo.toml")
            .metadata()
            .and_then(|m| m.modified())
            .ok(),
    );
    if newest.is_some_and(|newest| newest > built) {
        loud(&format!(
            "WARNING: {} is older than the newest file under reconciler/src; \
             the suite may be testing stale code (run `cargo build -p gitvisor`)",
            bin.display()
        ));
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = meta.modified() {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// Whether this process runs as root (effective uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Writes a line straight to the process's stderr, bypassing libtest's output capture, so
/// it shows even when the test passes (skips, stale-binary warnings, kernel notes).
pub fn loud(message: &str) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{message}");
    let _ = stderr.flush();
}

/// The running test's full name (libtest names each test's thread after it), else
/// `fallback`.
pub fn current_test_name(fallback: &str) -> String {
    match thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => fallback.to_owned(),
    }
}

/// Prints the loud skip line `SKIPPED (<why>): <test>`.
pub fn skip(test: &str, why: &str) {
    loud(&format!("SKIPPED ({why}): {test}"));
}

// ---------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

impl Outcome {
    /// Panics, with the whole output, unless the command exited with `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        if self.code != Some(code) {
            panic!("expected exit code {code}\n{self}");
        }
        self
    }

    /// Parses stdout as one JSON value; panics with the output when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_str(self.stdout.trim()) {
            Ok(value) => value,
            Err(err) => panic!("stdout is not JSON ({err})\n{self}"),
        }
    }
}

/// Runs `command` to completion with a deadline, capturing stdout and stderr.
pub fn run_command(mut command: Command) -> Outcome {
    let line = describe(&command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start `{line}`: {err}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_deadline(&mut child, COMMAND_TIMEOUT);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let outcome = Outcome {
        command: line,
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    };
    if status.is_none() {
        panic!("timed out after {COMMAND_TIMEOUT:?}; killed\n{outcome}");
    }
    outcome
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for `child`; kills it past `deadline` and returns `None`.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(err) => panic!("cannot wait for a child process: {err}"),
        }
    }
}

fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

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

// ---------------------------------------------------------------------------------------
// The namespace
// ---------------------------------------------------------------------------------------

/// A network namespace owned by one test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `gv-e2e-<test>-<pid>` (with a counter when one test makes several).
    /// Panics when it cannot: the caller has checked for root already.
    pub fn create(test: &str) -> Netns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        remove_orphaned_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let test: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = format!("{NS_PREFIX}{test}-{n}-{}", std::process::id());
        let mut command = Command::new("ip");
        command.args(["netns", "add", &name]);
        let outcome = run_command(command);
        if outcome.code != Some(0) {
            panic!(
                "running as root but cannot create network namespace {name}; \
                 this machine cannot run the e2e suite\n{outcome}"
            );
        }
        Netns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if thread::panicking() {
            let mut command = Command::new("ip");
            command.args(["-n", &self.name, "-d", "addr", "show"]);
            let dump = run_command(command);
            eprintln!(
                "--- links in {} when the test failed ---\n{}",
                self.name,
                dump.stdout.trim_end()
            );
        }
        let mut command = Command::new("ip");
        command.args(["netns", "del", &self.name]);
        let outcome = run_command(command);
        if outcome.code != Some(0) {
            eprintln!(
                "warning: could not delete namespace {}\n{outcome}",
                self.name
            );
        }
    }
}

/// Deletes `gv-e2e-…-<pid>` namespaces whose creating process is gone (a test run that
/// was itself killed never ran its `Drop`s).
fn remove_orphaned_namespaces() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let mut command = Command::new("ip");
        command.args(["netns", "list"]);
        let listing = run_command(command);
        for name in listing
            .stdout
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(NS_PREFIX))
        {
            let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                loud(&format!(
                    "removing orphaned namespace {name} (process {pid} is gone)"
                ));
                let mut command = Command::new("ip");
                command.args(["netns", "del", name]);
                let _ = run_command(command);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// The environment of one test
// ---------------------------------------------------------------------------------------

/// One test's world: a namespace, a state dir and a run dir. Field order matters: the
/// namespace is deleted before the temporary directories.
#[derive(Debug)]
pub struct TestEnv {
    test: String,
    netns: Netns,
    state_dir: TempDir,
    run_dir: TempDir,
}

impl TestEnv {
    /// A fresh environment, or `None` (after printing `SKIPPED (needs root): <test>`)
    /// when not running as root.
    pub fn new(test: &str) -> Option<TestEnv> {
        if !is_root() {
            skip(&current_test_name(test), "needs root");
            return None;
        }
        // Resolve the binary first: a missing binary should fail before any setup.
        let _ = gitvisor_bin();
        Some(TestEnv {
            test: test.to_owned(),
            netns: Netns::create(test),
            state_dir: tempdir("state"),
            run_dir: tempdir("run"),
        })
    }

    pub fn test(&self) -> &str {
        &self.test
    }

    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// Throws the state store away and starts with an empty state dir: a "lost store".
    pub fn lose_state(&mut self) {
        self.state_dir = tempdir("state");
    }

    /// The `ip netns exec NS gitvisor --state-dir … ARGS` command, not started.
    pub fn gitvisor_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.netns()])
            .arg(gitvisor_bin())
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .arg("--run-dir")
            .arg(self.run_dir.path())
            .args(["--host", TEST_HOST])
            .args(args);
        scrub_env(&mut command);
        command
    }

    /// Runs gitvisor inside the namespace to completion.
    pub fn gitvisor<I, S>(&self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.gitvisor_command(args))
    }

    /// `plan PATH --output json`, expecting success; returns the parsed plan.
    #[track_caller]
    pub fn plan_json(&self, path: &Path) -> Value {
        self.gitvisor([
            OsStr::new("plan"),
            path.as_os_str(),
            OsStr::new("--output"),
            OsStr::new("json"),
        ])
        .expect_code(0)
        .json()
    }

    /// `plan PATH --detailed-exitcode` (text output).
    pub fn plan_detailed(&self, path: &Path) -> Outcome {
        self.gitvisor([
            OsStr::new("plan"),
            path.as_os_str(),
            OsStr::new("--detailed-exitcode"),
        ])
    }

    /// `apply PATH`.
    pub fn apply(&self, path: &Path) -> Outcome {
        self.gitvisor([OsStr::new("apply"), path.as_os_str()])
    }

    /// `status --output json`, expecting success.
    #[track_caller]
    pub fn status_json(&self) -> Value {
        self.gitvisor(["status", "--output", "json"])
            .expect_code(0)
            .json()
    }

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

    /// A copy of examples/quickstart that this kernel can realise: a
    /// `vlanFiltering: true` line is removed when the kernel cannot filter VLANs (see
    /// [`kernel_supports_vlan_filtering`](Self::kernel_supports_vlan_filtering)).
    /// Tests check the result against [`declared_bridges`] of the copy, so the example
    /// may change without breaking them.
    pub fn quickstart(&self) -> Manifests {
        let manifests = Manifests::from_example("quickstart");
        let original = manifests.read(QUICKSTART_FILE);
        if original.contains("vlanFiltering: true") && !self.kernel_supports_vlan_filtering() {
            loud("NOTE: dropping `vlanFiltering: true` from the quickstart copy for this kernel");
            manifests.write(
                QUICKSTART_FILE,
                &original.replace("  vlanFiltering: true\n", ""),
            );
        }
        manifests
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
}

fn tempdir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("gv-e2e-{what}-"))
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// Removes the environment variables gitvisor reads, so the caller's shell cannot change
/// what a test does, and turns colour off.
fn scrub_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GITVISOR_") {
            command.env_remove(&key);
        }
    }
    command.env("NO_COLOR", "1");
}

/// Runs the gitvisor binary directly (no namespace, no root), with a throwaway state dir;
/// for commands that never touch the host (`validate`, `graph`, `schema`).
pub fn gitvisor_offline<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let state = tempdir("state");
    let run = tempdir("run");
    let mut command = Command::new(gitvisor_bin());
    command
        .arg("--state-dir")
        .arg(state.path())
        .arg("--run-dir")
        .arg(run.path())
        .args(["--host", TEST_HOST])
        .args(args);
    scrub_env(&mut command);
    run_command(command)
}

// ---------------------------------------------------------------------------------------
// Kernel state
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------

/// A temporary directory of manifest files: one revision.
#[derive(Debug)]
pub struct Manifests {
    dir: TempDir,
}

impl Default for Manifests {
    fn default() -> Self {
        Self::new()
    }
}

impl Manifests {
    /// An empty revision.
    pub fn new() -> Manifests {
        Manifests {
            dir: tempdir("manifests"),
        }
    }

    /// A copy of `examples/<name>` (so a test can edit it).
    pub fn from_example(name: &str) -> Manifests {
        let manifests = Manifests::new();
        let source = example_dir(name);
        let entries = std::fs::read_dir(&source)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", source.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let file_name = path.file_name().expect("a file has a name");
                std::fs::copy(&path, manifests.path().join(file_name))
                    .unwrap_or_else(|err| panic!("cannot copy {}: {err}", path.display()));
            }
        }
        manifests
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory as a `&str` (temporary paths are UTF-8 here).
    pub fn path_str(&self) -> &str {
        self.path().to_str().expect("temporary path is UTF-8")
    }

    /// Writes (or overwrites) `file` with `content`; returns its path.
    pub fn write(&self, file: &str, content: &str) -> PathBuf {
        let path = self.path().join(file);
        std::fs::write(&path, content)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        path
    }

    /// Reads `file` back.
    pub fn read(&self, file: &str) -> String {
        let path = self.path().join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
    }

    /// Removes `file`.
    pub fn remove(&self, file: &str) {
        let path = self.path().join(file);
        std::fs::remove_file(&path)
            .unwrap_or_else(|err| panic!("cannot remove {}: {err}", path.display()));
    }
}

/// A Bridge manifest. `spec` is the YAML body of `spec:` (already indented by two
/// spaces per line, or `{}`); `metadata_extra` lines go under `metadata:` after `name`.
pub fn bridge_manifest(name: &str, metadata_extra: &[&str], spec: &str) -> String {
    let mut out =
        format!("apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: {name}\n");
    for line in metadata_extra {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if spec.trim() == "{}" {
        out.push_str("spec: {}\n");
    } else {
        out.push_str("spec:\n");
        out.push_str(spec);
        if !spec.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The IPv4 address `10.<i / 256>.<i % 256>.1/24` used by the many-bridges tests, so
/// every bridge has its own /24.
pub fn nth_address(i: usize) -> String {
    format!("10.{}.{}.1/24", (i / 256) % 256, i % 256)
}

/// A Bridge as a manifest declares it: what the kernel must show after `apply`. Fields
/// the manifest leaves out are `None` (not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredBridge {
    pub name: String,
    pub mtu: Option<u64>,
    /// Sorted `addr/prefix`.
    pub addresses: Vec<String>,
    pub stp: Option<bool>,
    pub vlan_filtering: Option<bool>,
    /// `spec.up`, default true.
    pub up: bool,
}

impl DeclaredBridge {
    /// Panics, naming every difference, unless `link` is this bridge as declared and
    /// carries gitvisor's marker.
    #[track_caller]
    pub fn assert_realised_by(&self, link: &Link) {
        let mut wrong = Vec::new();
        if !link.is_bridge() {
            wrong.push(format!("kind {:?}, not bridge", link.kind));
        }
        if !link.is_marked() {
            wrong.push(format!("ifalias {:?}, not {MARKER:?}", link.alias));
        }
        if self.mtu.is_some_and(|mtu| mtu != link.mtu) {
            wrong.push(format!("mtu {} != {:?}", link.mtu, self.mtu));
        }
        if link.addresses != self.addresses {
            wrong.push(format!(
                "addresses {:?} != {:?}",
                link.addresses, self.addresses
            ));
        }
        let stp_on = link.stp_state.map(|s| s != 0);
        if self.stp.is_some_and(|stp| stp_on != Some(stp)) {
            wrong.push(format!(
                "stp_state {:?}, declared stp {:?}",
                link.stp_state, self.stp
            ));
        }
        let vlan_on = link.vlan_filtering.map(|v| v != 0);
        if self
            .vlan_filtering
            .is_some_and(|vlan| vlan_on != Some(vlan))
        {
            wrong.push(format!(
                "vlan_filtering {:?}, declared {:?}",
                link.vlan_filtering, self.vlan_filtering
            ));
        }
        if link.is_up() != self.up {
            wrong.push(format!("up {}, declared {}", link.is_up(), self.up));
        }
        assert!(
            wrong.is_empty(),
            "bridge {} does not match its manifest: {}\nkernel: {link:?}\ndeclared: {self:?}",
            self.name,
            wrong.join("; ")
        );
    }
}

/// Every Bridge declared by the `*.yaml`/`*.yml` files directly in `dir` (multi-document
/// files included), read with a plain YAML parser independent of gitvisor's loader.
pub fn declared_bridges(dir: &Path) -> Vec<DeclaredBridge> {
    use serde::Deserialize;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut bridges = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|err| panic!("{}: not YAML: {err}", file.display()));
            if value["kind"].as_str() != Some("Bridge") {
                continue;
            }
            let spec = &value["spec"];
            let mut addresses: Vec<String> = spec["addresses"]
                .as_sequence()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            addresses.sort();
            bridges.push(DeclaredBridge {
                name: value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a Bridge without a name", file.display()))
                    .to_owned(),
                mtu: spec["mtu"].as_u64(),
                addresses,
                stp: spec["stp"].as_bool(),
                vlan_filtering: spec["vlanFiltering"].as_bool(),
                up: spec["up"].as_bool().unwrap_or(true),
            });
        }
    }
    bridges
}

// ---------------------------------------------------------------------------------------
// Plan JSON
// ---------------------------------------------------------------------------------------

/// The change for `kind`/`name` in a `plan --output json` object; panics with the plan
/// when absent.
#[track_caller]
pub fn change<'a>(plan: &'a Value, kind: &str, name: &str) -> &'a Value {
    plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["kind"] == kind && c["name"] == name)
        .unwrap_or_else(|| panic!("plan has no change for {kind}/{name}:\n{plan:#}"))
}

/// The field change at `path` in a change, if listed.
pub fn field<'a>(change: &'a Value, path: &str) -> Option<&'a Value> {
    change["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["path"] == path)
}

/// The actions of every change that is not `noop`, as `(kind/name, action)`.
pub fn non_noop_actions(plan: &Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["action"] != "noop")
        .map(|c| {
            (
                format!(
                    "{}/{}",
                    c["kind"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?")
                ),
                c["action"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// The resources listed by `status --output json`, as `(kind, name) -> state`.
pub fn status_states(status: &Value) -> std::collections::BTreeMap<(String, String), String> {
    status["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                (
                    r["kind"].as_str().unwrap_or("?").to_owned(),
                    r["name"].as_str().unwrap_or("?").to_owned(),
                ),
                r["state"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// Finds `needle` in `haystack`, panicking with both when absent.
#[track_caller]
pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected to find {needle:?} in:\n{haystack}"
    );
}
