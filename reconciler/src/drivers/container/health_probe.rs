//! One run of a container's health check, for its supervisor ([`shim`](super::shim)):
//! `runc exec` of the check's command, its output kept while it runs, its processes
//! ended when it is done.
//!
//! # Why it looks like this
//!
//! - **Output is read while the check runs**, from non-blocking pipes, and only its last
//!   [`OUTPUT_TAIL_BYTES`] are kept for the verdict's message. Read only after the exit,
//!   a check printing more than a pipe holds (64 KiB) would block on its write and never
//!   exit, and fail every time at its timeout; kept whole, a chatty check would grow the
//!   supervisor, which runs outside the container's memory limit.
//! - **The check's process group is ended with it.** runc starts the check's command
//!   in a session (and process group) of its own inside the container, and `runc exec`
//!   returns only when the command has exited *and* its output pipes have closed; a
//!   process the check left in the background (`sleep 1000 &`) holds them open, so runc
//!   would wait for it and the check would always time out. So runc writes the
//!   command's pid (`--pid-file`), and as soon as that process is gone while runc still
//!   waits, the command's group is killed (runc then reports the command's own exit
//!   code); at the timeout, the command's group and `runc exec` (in a group of its own
//!   on the host) are killed. Nothing a check starts outlives it or piles up with every
//!   interval. While a process of the group lives its id cannot be given to another
//!   group; the group is signalled only after its leader ended, so when it has no
//!   member left the id could in theory be reused in between: a window of
//!   milliseconds, and only for a process that makes itself a group leader.
//! - **Polling, not threads**: the supervisor's checker thread already sleeps between
//!   checks; reading and waiting in short slices there needs no reader thread that a
//!   leftover writer could block for ever.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use super::seam::HealthConfig;
use super::shim::ShimArgs;

/// How much of a check's output (its last bytes, stdout and stderr as they came) is
/// kept for the verdict.
pub const OUTPUT_TAIL_BYTES: usize = 4 << 10;
/// How long the output a check wrote just before it exited is still read.
const DRAIN: Duration = Duration::from_millis(100);
/// The pause between two looks at a check that is quiet and still running.
const SLICE: Duration = Duration::from_millis(20);

/// One health check: whether it passed, and the end of its output (or why it failed
/// to run).
pub fn probe(args: &ShimArgs, health: &HealthConfig) -> (bool, String) {
    let pid_file = args.bundle.join(PID_FILE);
    let _ = std::fs::remove_file(&pid_file);
    let child = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&args.id)
        .args(&health.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot run the health check: {e}")),
    };
    let Ok(raw_pid) = i32::try_from(child.id()) else {
        return (false, "the health check has no valid process id".into());
    };
    let pid = Pid::from_raw(raw_pid);
    let mut streams: Vec<Stream> = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ]
    .into_iter()
    .flatten()
    .filter_map(|fd| Stream::new(std::fs::File::from(fd)))
    .collect();
    let mut tail = Tail::default();
    let deadline = Instant::now() + health.timeout;
    let mut command = CheckCommand::Starting;
    let ended = loop {
        let read = pump(&mut streams, &mut tail);
        command = command.next(&pid_file);
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) if Instant::now() >= deadline => {
                break Err(format!(
                    "timed out after {}",
                    humantime::format_duration(health.timeout)
                ));
            }
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                if !read {
                    std::thread::sleep(SLICE);
                }
            }
            Ok(WaitStatus::Exited(_, code)) => break Ok(code == 0),
            Ok(_) => break Ok(false),
            Err(e) => break Err(format!("cannot wait for the health check: {e}")),
        }
    };
    // What it wrote just before it ended; bounded, since a process it left behind may
    // still write.
    let until = Instant::now() + DRAIN;
    while !streams.is_empty() && Instant::now() < until {
        if !pump(&mut streams, &mut tail) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // What the command left running; at the timeout, all of it and runc too (its
    // group, leader unreaped: the id is still its own).
    command.end(&pid_file);
    if ended.is_err() {
        let _ = killpg(pid, Signal::SIGKILL);
    }
    let _ = child.wait();
    match ended {
        Ok(passed) => (passed, tail.text()),
        Err(why) => (false, why),
    }
}

/// Where `runc exec` writes the pid of the check's command, in the bundle.
const PID_FILE: &str = "health-check.pid";

/// The check's command inside the container, as seen from the host.
#[derive(Debug, Clone, Copy)]
enum CheckCommand {
    /// runc has yet to write its pid.
    Starting,
    /// It runs, as the leader of its own process group.
    Running(Pid),
    /// It has exited and its group was killed.
    Ended,
}

impl CheckCommand {
    /// One more look: its pid once runc wrote it; its group killed once it has exited
    /// (what it left in the background would keep `runc exec` waiting).
    fn next(self, pid_file: &std::path::Path) -> CheckCommand {
        match self {
            CheckCommand::Starting => std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| *pid > 1)
                .map_or(CheckCommand::Starting, |pid| {
                    CheckCommand::Running(Pid::from_raw(pid))
                }),
            CheckCommand::Running(pid) if !is_alive(pid) => {
                let _ = killpg(pid, Signal::SIGKILL);
                CheckCommand::Ended
            }
            other => other,
        }
    }

    /// Kills its group, unless that was done (also when runc was done before its pid was
    /// read: a process left in the background with its output elsewhere).
    fn end(self, pid_file: &std::path::Path) {
        let last = match self {
            CheckCommand::Starting => self.next(pid_file),
            other => other,
        };
        if let CheckCommand::Running(pid) = last {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// Whether process `pid` runs (exists and is not a zombie).
fn is_alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// One output pipe of the check, non-blocking.
struct Stream {
    file: std::fs::File,
}

impl Stream {
    fn new(file: std::fs::File) -> Option<Stream> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL).ok()?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(file.as_fd(), FcntlArg::F_SETFL(flags)).ok()?;
        Some(Stream { file })
    }
}

/// Reads what the pipes hold now into `tail`, dropping the pipes that closed; whether
/// anything was read.
fn pump(streams: &mut Vec<Stream>, tail: &mut Tail) -> bool {
    let mut buffer = [0u8; 16 << 10];
    let mut read_any = false;
    streams.retain_mut(|stream| {
        loop {
            match stream.file.read(&mut buffer) {
                Ok(0) => return false,
                Ok(n) => {
                    tail.push(&buffer[..n]);
                    read_any = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    });
    read_any
}

/// The last [`OUTPUT_TAIL_BYTES`] of what was pushed.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, more: &[u8]) {
        let more = &more[more.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
        self.bytes.extend_from_slice(more);
        if self.bytes.len() > OUTPUT_TAIL_BYTES {
            self.bytes.drain(..self.bytes.len() - OUTPUT_TAIL_BYTES);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The last `count` characters of `text`.
pub fn last_chars(text: &str, count: usize) -> String {
    let skip = text.chars().count().saturating_sub(count);
    text.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        tail.push(b"start ");
        tail.push(&vec![b'x'; OUTPUT_TAIL_BYTES * 3]);
        tail.push(b" the end");
        let text = tail.text();
        assert_eq!(text.len(), OUTPUT_TAIL_BYTES);
        assert!(text.ends_with("x the end"));
        assert_eq!(last_chars("héllo wörld", 5), "wörld");
        assert_eq!(last_chars("ab", 5), "ab");
    }
}
