//! Running a command to completion with a deadline ([`COMMAND_TIMEOUT`]), capturing
//! its output; past the deadline the process is killed and the test fails with what it
//! had printed.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
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
pub fn run_command_within(mut command: Command, deadline: Duration) -> Outcome {
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
    let status = wait_with_deadline(&mut child, deadline);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let outcome = Outcome {
        command: line,
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    };
    if status.is_none() {
        panic!("timed out after {deadline:?}; killed\n{outcome}");
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
