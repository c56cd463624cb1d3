//! Running a command to completion with a deadline ([`COMMAND_TIMEOUT`]), capturing
//! its output; past the deadline the command's process group is killed (it leads one of
//! its own, so a `vng` takes its QEMU along) and the test fails with what it had printed.
//! Output is read for at most [`PIPE_GRACE`] after the command ends, so a daemon it left
//! behind holding the pipes cannot hang the test either.

use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one command (gitvisor or ip) may run before the harness kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

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

/// Runs `command` to completion within [`COMMAND_TIMEOUT`], capturing stdout and stderr.
pub fn run_command(command: Command) -> Outcome {
    run_command_within(command, COMMAND_TIMEOUT)
}

/// Runs `command` to completion within `deadline` (a guest boot, an LVM test inside a
/// throwaway VM take longer than [`COMMAND_TIMEOUT`]), capturing stdout and stderr; past
/// it the process is killed and the test fails with what it had printed.
pub fn run_command_within(command: Command, deadline: Duration) -> Outcome {
    let (outcome, finished) = run_until(command, deadline);
    if !finished {
        panic!("timed out after {deadline:?}; killed\n{outcome}");
    }
    outcome
}

/// Runs `command` in a process group of its own, capturing stdout and stderr; past
/// `deadline` the whole group is killed (a `vng` takes its QEMU with it) and the second
/// value is `false`. Output a leftover grandchild keeps open is read for at most
/// [`PIPE_GRACE`] after the command ends, so such a process cannot hang the test.
pub fn run_until(mut command: Command, deadline: Duration) -> (Outcome, bool) {
    let line = describe(&command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start `{line}`: {err}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_deadline(&mut child, deadline);
    let grace = Instant::now() + PIPE_GRACE;
    let outcome = Outcome {
        command: line,
        code: status.and_then(|s| s.code()),
        stdout: collect(&stdout, grace),
        stderr: collect(&stderr, grace),
    };
    (outcome, status.is_some())
}

/// How long output is still read once a command has ended or been killed.
pub const PIPE_GRACE: Duration = Duration::from_secs(10);

/// Reads `pipe` on a thread of its own, chunk by chunk, until end of file.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(read @ 1..) = pipe.read(&mut chunk) {
                if sender.send(chunk[..read].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    receiver
}

/// What [`drain`] read, up to end of file or `until`, whichever comes first.
fn collect(chunks: &mpsc::Receiver<Vec<u8>>, until: Instant) -> String {
    let mut bytes = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match chunks.recv_timeout(left) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bytes
                    .extend_from_slice(b"\n[output cut: a process left behind kept the pipe open]");
                break;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits for `child`; kills its process group past `deadline` and returns `None`.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() > deadline => {
                kill_group(child);
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

/// SIGKILL to `child`'s process group (it leads one: [`run_until`]), and to `child`
/// itself should the group be gone.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    let _ = child.kill();
}

fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_deadline_the_whole_group_is_killed_and_nothing_hangs() {
        // The shell's background `sleep` keeps stdout open: killing the shell alone
        // would leave the reader waiting for it.
        let mut command = Command::new("sh");
        command.args(["-c", "echo before; sleep 300 & wait"]);
        let started = Instant::now();
        let (outcome, finished) = run_until(command, Duration::from_millis(500));
        assert!(!finished, "{outcome}");
        assert_eq!(outcome.stdout.trim(), "before", "{outcome}");
        assert!(
            started.elapsed() < PIPE_GRACE,
            "the reader waited for the orphan: {:?}",
            started.elapsed()
        );
    }
}
