//! End to end: the control API (status, shutdown, stop), the console socket, the pid file,
//! `--daemonize` and SIGTERM, against the real `gitvisor-vmm` running a test guest.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use common::{Vmm, build_guest, can_run, vmm_binary, wait_until};
use gitvisor_vmm::control::{Request, State, call};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_daemonized_vmm_reports_status_and_shuts_down_when_the_guest_does() {
    if !can_run("a_daemonized_vmm_reports_status_and_shuts_down_when_the_guest_does") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("shutdown", dir.path());
    let path = |name: &str| dir.path().join(name);
    let launch = |log: &str| {
        Command::new(vmm_binary())
            .arg("--kernel")
            .arg(&guest)
            .args(["--memory", "64", "--daemonize"])
            .arg("--pid-file")
            .arg(path("pid"))
            .arg("--api-socket")
            .arg(path("api.sock"))
            .arg("--serial-socket")
            .arg(path("serial.sock"))
            .arg("--serial-log")
            .arg(path("serial.log"))
            .arg("--log-file")
            .arg(path(log))
            .output()
            .expect("run gitvisor-vmm")
    };
    let first = launch("vmm.log");
    assert!(
        first.status.success(),
        "daemonize failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let pid: i32 = std::fs::read_to_string(path("pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let cleanup = scopeguard(pid);
    let serial = || std::fs::read_to_string(path("serial.log")).unwrap_or_default();
    wait_until(
        || serial().contains("waiting for the power button or ctrl-alt-del"),
        || format!("guest never started: {}", serial()),
    );

    // A second VMM on the same pid file is refused before it touches anything.
    let second = launch("second.log");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is locked by another running gitvisor-vmm")
            && stderr.contains(&pid.to_string()),
        "{stderr}"
    );

    let mut console = UnixStream::connect(path("serial.sock")).expect("attach console");
    let response = call(&path("api.sock"), Request::Status).expect("status");
    let status = response.status.expect("status body");
    assert!(response.ok);
    assert_eq!(status.state, State::Running);
    assert_eq!(status.pid, pid as u32);
    assert_eq!((status.vcpus, status.memory_mib), (1, 64));
    assert!(status.rss_kib > status.guest_rss_kib, "{status:?}");

    let response = call(&path("api.sock"), Request::Shutdown).expect("shutdown");
    assert_eq!(response.state, Some(State::ShuttingDown));
    let mut seen = String::new();
    let mut chunk = [0u8; 256];
    while !seen.lines().any(|line| line == "power button") {
        let len = console.read(&mut chunk).expect("console read");
        assert!(
            len > 0,
            "console closed before the guest answered: {seen:?}"
        );
        seen.push_str(&String::from_utf8_lossy(&chunk[..len]));
    }
    wait_until(|| gone(pid), || format!("VMM {pid} still running"));
    assert!(!path("pid").exists(), "pid file removed");
    assert!(!path("api.sock").exists(), "control socket removed");
    assert!(!path("serial.sock").exists(), "console socket removed");
    let log = std::fs::read_to_string(path("vmm.log")).expect("log");
    assert!(
        log.contains("exiting: the guest powered off (ACPI S5)"),
        "{log}"
    );
    drop(cleanup);
}

#[test]
fn ctrl_alt_del_reaches_the_guest_through_the_i8042() {
    if !can_run("ctrl_alt_del_reaches_the_guest_through_the_i8042") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("shutdown", dir.path());
    let api = dir.path().join("api.sock");
    let api_arg = api.display().to_string();
    let mut vmm = Vmm::start(&guest, dir, &["--api-socket", &api_arg]);
    vmm.wait_for_serial("waiting for the power button or ctrl-alt-del");
    let response = call(&api, Request::CtrlAltDel).expect("ctrl-alt-del");
    assert_eq!(response.state, Some(State::ShuttingDown));
    let status = vmm.wait();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        vmm.serial(),
        "waiting for the power button or ctrl-alt-del\nctrl-alt-del\n"
    );
    assert!(
        vmm.log()
            .contains("exiting: the guest reset the machine (i8042)"),
        "{}",
        vmm.log()
    );
}

#[test]
fn stop_ends_the_vmm_at_once_and_answers_first() {
    if !can_run("stop_ends_the_vmm_at_once_and_answers_first") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("shutdown", dir.path());
    let api = dir.path().join("api.sock");
    let api_arg = api.display().to_string();
    let mut vmm = Vmm::start(&guest, dir, &["--api-socket", &api_arg]);
    vmm.wait_for_serial("waiting for the power button or ctrl-alt-del");
    let garbled = call_raw(&api, "{\"command\":\"reboot\"}\n");
    assert!(
        garbled.contains("\"ok\":false") && garbled.contains("reboot"),
        "{garbled}"
    );
    let response = call(&api, Request::Stop).expect("stop");
    assert_eq!(response.state, Some(State::Stopping));
    let status = vmm.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        vmm.log().contains("exiting: stopped over the control API"),
        "{}",
        vmm.log()
    );
    assert_eq!(
        vmm.serial(),
        "waiting for the power button or ctrl-alt-del\n",
        "the guest was not asked"
    );
    assert!(!api.exists());
}

#[test]
fn sigterm_ends_the_vmm_cleanly() {
    if !can_run("sigterm_ends_the_vmm_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = build_guest("shutdown", dir.path());
    let pid_file = dir.path().join("pid");
    let pid_arg = pid_file.display().to_string();
    let mut vmm = Vmm::start(&guest, dir, &["--pid-file", &pid_arg]);
    vmm.wait_for_serial("waiting for the power button or ctrl-alt-del");
    kill(Pid::from_raw(vmm.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = vmm.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        vmm.log().contains("exiting: received SIGTERM"),
        "{}",
        vmm.log()
    );
    assert!(!pid_file.exists());
}

/// Sends one raw line, returns the raw answer line.
fn call_raw(path: &Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = UnixStream::connect(path).expect("connect");
    stream.write_all(line.as_bytes()).expect("send");
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .expect("answer");
    answer
}

/// Kills the daemon if the test fails before it exits.
struct Guard(i32);

fn scopeguard(pid: i32) -> Guard {
    Guard(pid)
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !gone(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}
