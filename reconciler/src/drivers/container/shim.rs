//! The container's supervisor (`gitvisor container-shim`, hidden): one small process per
//! container, started by gitvisor in a process group of its own, living as long as the
//! container's init and no longer. gitvisor itself may exit or restart meanwhile.
//!
//! Why: runc runs a detached container without a parent that waits for it, so nobody
//! would learn how it exited, keep its output, or run its health check. Container
//! engines put a shim there (containerd-shim, conmon); this is gitvisor's.
//!
//! Order of steps:
//!
//! 1. Record its pid (`supervisor.pid`: the controller's watch tells from it whether
//!    the container is still supervised). Become a child subreaper, so the container's
//!    init (whose parent, `runc create`, exits) is re-parented to the supervisor, which
//!    can then wait for it.
//! 2. `runc create` (or `runc run --detach` when nothing is to be set up before the
//!    start) with the container's stdout and stderr on two pipes whose read ends
//!    the supervisor keeps. Answer gitvisor on stdout with one line: `created PID`, or
//!    `error MESSAGE` (runc's own message from its log).
//! 3. Copy both pipes into the log file, in pieces of bounded size, rotating it by size
//!    ([`logs`](super::logs)): the supervisor's memory stays small whatever the
//!    container prints.
//! 4. When a health check is configured: once the container runs, run it every
//!    interval with `runc exec` and a timeout ([`health_probe`](super::health_probe)),
//!    and record `health.json` when the verdict or the count of failures changes (the
//!    controller watches it); after `retries` failures in a row past the start period,
//!    mark it unhealthy and SIGKILL the container (gitvisor restarts it under its
//!    restart policy: the controller at once, see [`watch`](super::watch), else the
//!    next `apply`).
//! 5. Wait for the init; record `exit.json` (code, 128 + signal for a signal, time,
//!    whether it was killed as unhealthy); let the log copiers drain; exit.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::health_probe;
use super::host::{EXIT_FILE, HEALTH_FILE};
use super::logs;
use super::seam::{ExitRecord, HealthConfig, HealthRecord};

/// Where gitvisor writes the health check for the supervisor (empty: none).
pub const HEALTH_CONFIG_FILE: &str = "health-check.json";
/// Where the supervisor records its pid, for the controller's watch
/// ([`watch`](super::watch)) to tell whether it still runs.
pub const SUPERVISOR_PID_FILE: &str = "supervisor.pid";

/// What the supervisor needs to know.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub runc: PathBuf,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub log: PathBuf,
    pub id: String,
    /// gitvisor's pid, to notice a gitvisor that died before the supervisor started.
    pub parent: Option<i32>,
    /// `runc run --detach` instead of `runc create`: created and started at once.
    pub start: bool,
}

/// The supervisor's one-line answer: `Ok(pid)` or `Err(message)`; `None` for anything
/// else.
pub fn parse_answer(line: &str) -> Option<Result<u32, String>> {
    if let Some(pid) = line.strip_prefix("created ") {
        return pid.trim().parse().ok().map(Ok);
    }
    line.strip_prefix("error ").map(|m| Err(m.to_owned()))
}

/// `gitvisor container-shim`'s arguments, as the container driver passes them.
#[derive(Debug, clap::Parser)]
#[command(name = "gitvisor container-shim")]
struct ShimCommand {
    #[arg(long)]
    runc: PathBuf,
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    id: String,
    #[arg(long)]
    parent: Option<i32>,
    #[arg(long)]
    start: bool,
}

/// The registration's `helper`: `gitvisor container-shim ARGS…` parsed, then [`run`]. A
/// usage error is printed, with clap's exit status.
pub(crate) fn run_command(args: Vec<std::ffi::OsString>) -> ExitCode {
    use clap::Parser;
    let argv = std::iter::once(std::ffi::OsString::from("container-shim")).chain(args);
    match ShimCommand::try_parse_from(argv) {
        Ok(command) => run(ShimArgs {
            runc: command.runc,
            root: command.root,
            bundle: command.bundle,
            log: command.log,
            id: command.id,
            parent: command.parent,
            start: command.start,
        }),
        Err(error) => {
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
        }
    }
}

/// Runs the supervisor to its end.
pub fn run(args: ShimArgs) -> ExitCode {
    match supervise(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gitvisor container-shim {}: {message}", args.id);
            // gitvisor may still be reading the answer.
            let _ = writeln!(std::io::stdout(), "error {message}");
            ExitCode::FAILURE
        }
    }
}

fn supervise(args: &ShimArgs) -> Result<(), String> {
    // Until gitvisor has its answer, the supervisor dies with it: a gitvisor killed
    // part-way leaves at most a created container (which the next plan repairs), never a
    // supervisor creating one behind the next run's back.
    nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL))
        .map_err(|e| format!("cannot tie the supervisor to gitvisor: {e}"))?;
    if args
        .parent
        .is_some_and(|parent| nix::unistd::getppid().as_raw() != parent)
    {
        return Err("gitvisor ended before the container was created".into());
    }
    // A session of its own: no terminal, no signals meant for gitvisor's group.
    let _ = nix::unistd::setsid();
    write_atomically(
        &args.bundle.join(SUPERVISOR_PID_FILE),
        std::process::id().to_string().as_bytes(),
    );
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make a pipe for the container's output: {e}"))
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let runc_log = args.bundle.join("runc.log");
    let _ = fs::remove_file(&runc_log);
    let status = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.root)
        .arg("--log")
        .arg(&runc_log)
        .args(["--log-format", "json"])
        .arg(if args.start { "run" } else { "create" })
        .args(args.start.then_some("--detach"))
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(args.bundle.join("pid"))
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_write))
        .stderr(Stdio::from(err_write))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", args.runc.display()))?;
    if !status.success() {
        return Err(format!(
            "runc {} {} failed ({status}): {}",
            if args.start { "run" } else { "create" },
            args.id,
            last_error(&runc_log)
        ));
    }
    let pid_file = args.bundle.join("pid");
    let pid: i32 = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("runc create wrote no pid to {}", pid_file.display()))?;

    let log = logs::LogWriter::open(&args.log)
        .map_err(|e| format!("cannot open the log file {}: {e}", args.log.display()))?;
    let log = Arc::new(Mutex::new(log));
    let copiers = [out_read, err_read].map(|read| {
        let log = Arc::clone(&log);
        std::thread::spawn(move || logs::copy_output(fs::File::from(read), &log))
    });
    let done = Arc::new(AtomicBool::new(false));
    let unhealthy = Arc::new(AtomicBool::new(false));
    let checker = read_health(&args.bundle).map(|health| {
        let (args, done, unhealthy) = (args.clone(), Arc::clone(&done), Arc::clone(&unhealthy));
        std::thread::spawn(move || check_health(&args, &health, &done, &unhealthy))
    });

    println!("created {pid}");
    let _ = std::io::stdout().flush();
    // From here on the container runs by itself; so does its supervisor.
    nix::sys::prctl::set_pdeathsig(None)
        .map_err(|e| format!("cannot untie the supervisor from gitvisor: {e}"))?;

    let code = wait_for(pid);
    done.store(true, Ordering::SeqCst);
    let record = ExitRecord {
        code,
        at: SystemTime::now(),
        unhealthy: unhealthy.load(Ordering::SeqCst),
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        write_atomically(&args.bundle.join(EXIT_FILE), &json);
    }
    if let Some(checker) = checker {
        let _ = checker.join();
    }
    for copier in copiers {
        let _ = copier.join();
    }
    Ok(())
}

/// The init's exit code (128 + N when killed by signal N; -1 when it could not be
/// waited for and only its disappearance was seen).
fn wait_for(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    // Not our child (the subreaper did not catch it): watch it go.
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
    -1
}

/// runc's last error message from its JSON log.
fn last_error(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["level"] == "error")
        .and_then(|entry| entry["msg"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "runc gave no reason".into())
}

fn read_health(bundle: &Path) -> Option<HealthConfig> {
    let bytes = fs::read(bundle.join(HEALTH_CONFIG_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    if fs::write(&temporary, bytes).is_ok() {
        let _ = fs::rename(&temporary, path);
    }
}

/// Writes `health.json`, but only when the verdict or the count of failures changed
/// since `last` (a steady verdict wakes no watcher).
fn record_health(
    args: &ShimArgs,
    last: &mut Option<(String, u32)>,
    status: &str,
    failures: u32,
    output: &str,
) {
    if last
        .as_ref()
        .is_some_and(|(s, f)| s == status && *f == failures)
    {
        return;
    }
    *last = Some((status.to_owned(), failures));
    let record = HealthRecord {
        status: status.to_owned(),
        failures,
        last_output: health_probe::last_chars(output.trim(), 512),
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        write_atomically(&args.bundle.join(HEALTH_FILE), &json);
    }
}

/// Sleeps `duration` in short slices; `false` when the container ended meanwhile.
fn pause(duration: Duration, done: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if done.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !done.load(Ordering::SeqCst)
}

fn is_running(args: &ShimArgs) -> bool {
    Command::new(&args.runc)
        .arg("--root")
        .arg(&args.root)
        .args(["state", &args.id])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .is_some_and(|state| state["status"] == "running")
}

fn check_health(args: &ShimArgs, health: &HealthConfig, done: &AtomicBool, unhealthy: &AtomicBool) {
    let mut last = None;
    record_health(args, &mut last, "starting", 0, "");
    while !is_running(args) {
        if !pause(Duration::from_millis(200), done) {
            return;
        }
    }
    let started = Instant::now();
    let mut failures = 0;
    loop {
        if !pause(health.interval, done) {
            return;
        }
        let (passed, output) = health_probe::probe(args, health);
        if passed {
            failures = 0;
            record_health(args, &mut last, "healthy", 0, &output);
            continue;
        }
        if started.elapsed() < health.start_period {
            record_health(args, &mut last, "starting", 0, &output);
            continue;
        }
        failures += 1;
        if failures < health.retries.max(1) {
            record_health(args, &mut last, "starting", failures, &output);
            continue;
        }
        record_health(args, &mut last, "unhealthy", failures, &output);
        unhealthy.store(true, Ordering::SeqCst);
        let _ = Command::new(&args.runc)
            .arg("--root")
            .arg(&args.root)
            .args(["kill", &args.id, "KILL"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_line_is_a_pid_or_an_error() {
        assert_eq!(parse_answer("created 42"), Some(Ok(42)));
        assert_eq!(
            parse_answer("error runc create failed: x"),
            Some(Err("runc create failed: x".into()))
        );
        assert_eq!(parse_answer("hello"), None);
    }

    #[test]
    fn runcs_last_error_is_read_from_its_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runc.log");
        fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\n{\"level\":\"error\",\"msg\":\"runc create failed: bad\"}\n",
        )
        .unwrap();
        assert_eq!(last_error(&log), "runc create failed: bad");
        assert_eq!(last_error(&dir.path().join("none")), "runc gave no reason");
    }
}
