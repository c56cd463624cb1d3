//! Helpers for the controller scenarios (`e2e/tests/controller.rs`): `gitvisor run` as a
//! child process inside the test's namespace, told to notify a real datagram socket the
//! way systemd's `NOTIFY_SOCKET` is; git repositories to commit to; the API over its unix
//! socket; `promtool`.
//!
//! - [`Controller::spawn`] starts `ip netns exec NS gitvisor … run ARGS` with
//!   `NOTIFY_SOCKET` pointing at a socket the harness bound; its stderr goes to a file,
//!   dumped when the test fails. [`Controller::wait_ready`] waits for `READY=1` (sent
//!   after the first reconcile attempt), so tests never guess how long startup takes.
//!   Dropping a [`Controller`] kills a controller still running (SIGKILL) and reaps it.
//! - [`wait_for`] polls a condition on the kernel or the API until a deadline: tests wait
//!   for outcomes, never assert how fast they came (the benchmark measures that).
//! - [`GitRepo`] is a work tree whose commits the controller fetches over `file://`, or
//!   over `git://` from a [`GitDaemon`] on the namespace's loopback.
//! - [`MetricsFlood`] holds many unfinished requests open on a TCP port in the
//!   namespace, opening again those the server closes, as an attacker on the
//!   unauthenticated metrics port would.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{TestEnv, gitvisor_bin};

/// How long a controller may take to report ready, or to stop after SIGTERM.
pub const CONTROLLER_DEADLINE: Duration = Duration::from_secs(90);

/// A `gitvisor run` child process.
pub struct Controller {
    child: Child,
    notify: UnixDatagram,
    dir: TempDir,
    exited: Option<ExitStatus>,
}

impl Controller {
    /// Starts `gitvisor run ARGS` in `env`'s namespace; does not wait for anything.
    pub fn spawn(env: &TestEnv, args: &[&str]) -> Controller {
        Controller::spawn_with_env(env, args, &[])
    }

    /// [`Controller::spawn`] with extra environment variables (e.g. `JOURNAL_STREAM`).
    pub fn spawn_with_env(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Controller {
        let mut command = env.gitvisor_command(std::iter::once("run").chain(args.iter().copied()));
        command.envs(vars.iter().copied());
        Controller::spawn_command(command)
    }

    /// Starts `command`, a `gitvisor … run …` command line made by the caller (a
    /// container test's, say); does not wait for anything.
    pub fn spawn_command(mut command: Command) -> Controller {
        let dir = tempfile::Builder::new()
            .prefix("gv-e2e-controller-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let socket = dir.path().join("notify");
        let notify = UnixDatagram::bind(&socket).expect("cannot bind the notify socket");
        let log = std::fs::File::create(dir.path().join("stderr")).expect("cannot create the log");
        command
            .env("NOTIFY_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().expect("cannot start gitvisor run");
        Controller {
            child,
            notify,
            dir,
            exited: None,
        }
    }

    /// Starts the controller and waits for `READY=1`; returns the notification.
    pub fn start(env: &TestEnv, args: &[&str]) -> (Controller, String) {
        let mut controller = Controller::spawn(env, args);
        let ready = controller.wait_ready();
        (controller, ready)
    }

    /// The pid of gitvisor (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next notification datagram, if one comes within `timeout`.
    pub fn notification(&self, timeout: Duration) -> Option<String> {
        self.notify
            .set_read_timeout(Some(timeout))
            .expect("cannot set a read timeout");
        let mut buffer = vec![0u8; 4096];
        let n = self.notify.recv(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
    }

    /// Waits for the datagram with `READY=1`; panics (with the log) when the controller
    /// exits or the deadline passes first.
    #[track_caller]
    pub fn wait_ready(&mut self) -> String {
        let deadline = Instant::now() + CONTROLLER_DEADLINE;
        while Instant::now() < deadline {
            if let Some(message) = self.notification(Duration::from_millis(200))
                && message.lines().any(|l| l == "READY=1")
            {
                return message;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                panic!(
                    "gitvisor run exited ({status}) before READY=1\n{}",
                    self.log()
                );
            }
        }
        panic!(
            "gitvisor run sent no READY=1 within {CONTROLLER_DEADLINE:?}\n{}",
            self.log()
        );
    }

    /// Sends `signal` (e.g. `-TERM`) to the controller.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM, then waits for the exit; panics when it does not stop in time.
    #[track_caller]
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait_exit()
    }

    /// Waits for the controller to exit on its own.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + CONTROLLER_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot wait for gitvisor") {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gitvisor run did not exit within {CONTROLLER_DEADLINE:?}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the controller wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- gitvisor run's stderr ---\n{}", self.log());
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics with `what` past `deadline`.
/// Returns how long it took (for the test's own report, never asserted).
#[track_caller]
pub fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `METHOD path` on the controller's API socket in `run_dir`, as root; returns the status
/// code and the body.
pub fn api(run_dir: &Path, method: &str, path: &str) -> (u16, String) {
    let socket = run_dir.join("controller.sock");
    let mut stream = UnixStream::connect(&socket)
        .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("cannot set a read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("cannot send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("cannot read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, body.to_owned())
}

/// `GET /v1/status` as JSON.
#[track_caller]
pub fn api_status(run_dir: &Path) -> serde_json::Value {
    let (code, body) = api(run_dir, "GET", "/v1/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("status is not JSON ({err}): {body}"))
}

/// The value of the sample `name` (with its labels, exactly as exposed), if present.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
}

/// `promtool check metrics` on `text`: `None` (after a loud skip line) when promtool is
/// not installed, else its verdict with what it said.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => {
            crate::skip(
                &crate::current_test_name("promtool check metrics"),
                "promtool not installed; CI installs the prometheus package",
            );
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let output = child.wait_with_output().expect("cannot wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(if output.status.success() {
        Ok(())
    } else {
        Err(said)
    })
}

/// Whether `git` can be run; prints a loud skip line for `test` when not.
pub fn have_git(test: &str) -> bool {
    let found = Command::new("git")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::skip(test, "git not installed");
    }
    found
}

/// A git work tree with a `main` branch, committed to by the test.
pub struct GitRepo {
    dir: TempDir,
}

impl Default for GitRepo {
    fn default() -> Self {
        GitRepo::new()
    }
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::Builder::new()
            .prefix("gv-e2e-repo-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let repo = GitRepo { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file:///…` of the repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Runs git in the work tree with a fixed identity; panics unless it succeeds.
    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args([
                "-c",
                "user.name=gitvisor e2e",
                "-c",
                "user.email=e2e@gitvisor.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.path())
            .output()
            .expect("cannot run git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Writes `file` (relative) with `content`.
    pub fn write(&self, file: &str, content: &str) {
        let path = self.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("cannot create a directory in the repo");
        }
        std::fs::write(&path, content).expect("cannot write a file in the repo");
    }

    /// Commits everything; returns the commit's SHA.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// `git daemon` serving a directory's repositories on the namespace's loopback.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    /// Serves `base` (read-only, every repository below it) on 127.0.0.1:`port` inside
    /// `env`'s namespace (whose loopback must be up); waits until it accepts connections.
    pub fn start(env: &TestEnv, base: &Path, port: u16) -> GitDaemon {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                env.netns(),
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start git daemon");
        let daemon = GitDaemon { child, port };
        wait_for("git daemon to listen", CONTROLLER_DEADLINE, || {
            port_open(env, port)
        });
        daemon
    }
}

/// Whether something listens on 127.0.0.1:`port` in `env`'s namespace (`ss`).
fn port_open(env: &TestEnv, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", env.netns(), "ss", "-Hltn"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).contains(&format!("127.0.0.1:{port}"))
        })
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory path for test files that must outlive a helper (e.g. keys).
pub fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("gv-e2e-scratch-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// The gitvisor binary, for commands run outside a namespace (a non-root client).
pub fn binary() -> PathBuf {
    gitvisor_bin().to_path_buf()
}

/// Connections held open on `127.0.0.1:PORT` in a namespace, each having sent half a
/// request head, from a thread that entered the namespace; every 500 ms the ones the
/// server closed are opened again, until the flood is dropped.
pub struct MetricsFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    /// How many connections the server has closed so far.
    pub closed_by_server: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl MetricsFlood {
    /// Opens `count` connections in `env`'s namespace; returns once each was tried. The
    /// test process's soft descriptor limit is raised to its hard limit for them
    /// (children started before keep theirs).
    pub fn open(env: &TestEnv, port: u16, count: usize) -> MetricsFlood {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, mpsc};

        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft RLIMIT_NOFILE");
        assert!(
            hard > count as u64 + 200,
            "the hard descriptor limit {hard} is too low to open {count} connections"
        );
        let netns =
            std::fs::File::open(format!("/run/netns/{}", env.netns())).expect("open the namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let closed_by_server = Arc::new(AtomicUsize::new(0));
        let (opened, all_open) = mpsc::channel();
        let thread = {
            let (stop, closed) = (stop.clone(), closed_by_server.clone());
            thread::spawn(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the test namespace");
                let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let connect = || -> std::io::Result<std::net::TcpStream> {
                    let mut stream =
                        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(300))?;
                    // Half a head: the server waits for the rest.
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
                    stream.set_nonblocking(true)?;
                    Ok(stream)
                };
                // A connection the server does not take in time is tried again next
                // round (a server out of descriptors leaves them in its backlog).
                let mut streams: Vec<Option<std::net::TcpStream>> =
                    (0..count).map(|_| connect().ok()).collect();
                let _ = opened.send(());
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(500));
                    for slot in &mut streams {
                        let gone = match slot {
                            Some(stream) => {
                                let mut byte = [0u8; 1];
                                let gone = match stream.read(&mut byte) {
                                    Ok(_) => true,
                                    Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
                                };
                                if gone {
                                    closed.fetch_add(1, Ordering::Relaxed);
                                }
                                gone
                            }
                            None => true,
                        };
                        if gone {
                            *slot = connect().ok();
                        }
                    }
                }
            })
        };
        all_open
            .recv_timeout(Duration::from_secs(60))
            .expect("the flood opened its connections");
        MetricsFlood {
            stop,
            thread: Some(thread),
            closed_by_server,
        }
    }
}

impl Drop for MetricsFlood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How many file descriptors process `pid` has open.
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or_else(|err| panic!("cannot list /proc/{pid}/fd: {err}"))
}
