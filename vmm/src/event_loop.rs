//! The main thread's loop (epoll): the exit event, SIGTERM/SIGINT/SIGHUP (a signalfd),
//! the control socket and its clients, the console socket and its clients, and the taps.
//! It returns the [`ExitReason`] once one is recorded; [`crate::vm::Vm::run`] then kicks
//! and joins the vCPU threads.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::control::{self, Request, Response, State, Status};
use crate::devices::ged::Ged;
use crate::devices::i8042::I8042;
use crate::devices::serial::{ConsoleClients, SerialDevice};
use crate::exit::{ExitHandle, ExitReason};
use crate::vm::TapSource;

/// What the loop needs from the VM.
pub struct LoopContext {
    pub exit: ExitHandle,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub ged: Arc<Ged>,
    pub console_clients: ConsoleClients,
    pub started: Instant,
    pub cpus: u8,
    pub memory_mib: u64,
    /// Host address ranges of guest memory.
    pub guest_ranges: Vec<(u64, u64)>,
}

enum Source {
    Exit,
    Signal,
    ApiListener,
    ApiClient { stream: UnixStream, buffer: Vec<u8> },
    ConsoleListener,
    ConsoleClient(UnixStream),
    Tap(usize),
}

/// The longest request line a control client may send.
const MAX_REQUEST: usize = 4096;

pub struct EventLoop {
    epoll: Epoll,
    signals: SignalFd,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EventLoop {
    /// Blocks the termination signals on this thread (threads spawned later inherit the
    /// mask) and opens the signalfd and epoll instance.
    pub fn new() -> Result<Self, String> {
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(signal);
        }
        mask.thread_block()
            .map_err(|error| format!("cannot block termination signals: {error}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|error| format!("cannot open a signalfd: {error}"))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|error| format!("cannot create an epoll instance: {error}"))?;
        Ok(EventLoop { epoll, signals })
    }

    fn watch(&self, fd: impl AsFd, token: u64, flags: EpollFlags) -> Result<(), String> {
        self.epoll
            .add(fd, EpollEvent::new(flags, token))
            .map_err(|error| format!("cannot watch a descriptor: {error}"))
    }

    /// Runs until an exit is requested.
    pub fn run(
        &mut self,
        context: LoopContext,
        api: Option<UnixListener>,
        console: Option<UnixListener>,
        taps: &[TapSource],
    ) -> Result<ExitReason, String> {
        let mut sources: HashMap<u64, Source> = HashMap::new();
        let mut next_token = 0u64;
        let mut token = || {
            next_token += 1;
            next_token
        };
        let readable = EpollFlags::EPOLLIN;

        let exit_token = token();
        self.watch(context.exit.event(), exit_token, readable)?;
        sources.insert(exit_token, Source::Exit);
        let signal_token = token();
        self.watch(&self.signals, signal_token, readable)?;
        sources.insert(signal_token, Source::Signal);
        if let Some(listener) = &api {
            let t = token();
            self.watch(listener, t, readable)?;
            sources.insert(t, Source::ApiListener);
        }
        if let Some(listener) = &console {
            let t = token();
            self.watch(listener, t, readable)?;
            sources.insert(t, Source::ConsoleListener);
        }
        for (index, tap) in taps.iter().enumerate() {
            let t = token();
            // Edge-triggered: a frame the guest has no buffer for waits in the tap without
            // waking the loop again; the guest's next RX notification picks it up.
            self.watch(&tap.tap, t, readable | EpollFlags::EPOLLET)?;
            sources.insert(t, Source::Tap(index));
        }

        let mut state = State::Running;
        let mut events = vec![EpollEvent::empty(); 32];
        loop {
            if let Some(reason) = context.exit.reason() {
                return Ok(reason);
            }
            let count = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(count) => count,
                Err(nix::Error::EINTR) => continue,
                Err(error) => return Err(format!("epoll_wait failed: {error}")),
            };
            for event in &events[..count] {
                let key = event.data();
                let Some(source) = sources.get_mut(&key) else {
                    continue;
                };
                let mut remove = false;
                let mut accepted: Vec<Source> = Vec::new();
                match source {
                    Source::Exit => {
                        let _ = context.exit.event().read();
                    }
                    Source::Signal => {
                        if let Ok(Some(info)) = self.signals.read_signal() {
                            let signal = Signal::try_from(info.ssi_signo as i32)
                                .map(|signal| signal.as_str().to_string())
                                .unwrap_or_else(|_| format!("signal {}", info.ssi_signo));
                            context.exit.request(ExitReason::Signal { signal });
                        }
                    }
                    Source::ApiListener => {
                        if let Some(listener) = &api {
                            while let Ok((stream, _)) = listener.accept() {
                                if stream.set_nonblocking(true).is_ok() {
                                    accepted.push(Source::ApiClient {
                                        stream,
                                        buffer: Vec::new(),
                                    });
                                }
                            }
                        }
                    }
                    Source::ConsoleListener => {
                        if let Some(listener) = &console {
                            while let Ok((stream, _)) = listener.accept() {
                                let Ok(output) = stream.try_clone() else {
                                    continue;
                                };
                                if stream.set_nonblocking(true).is_ok() {
                                    lock(&context.console_clients).push(output);
                                    accepted.push(Source::ConsoleClient(stream));
                                }
                            }
                        }
                    }
                    Source::ApiClient { stream, buffer } => {
                        remove = serve_api(stream, buffer, &context, &mut state);
                    }
                    Source::ConsoleClient(stream) => {
                        remove = feed_console(stream, &context.serial);
                    }
                    Source::Tap(index) => {
                        if let Some(tap) = taps.get(*index) {
                            tap.transport.process_host();
                        }
                    }
                }
                if remove
                    && let Some(Source::ApiClient { stream, .. } | Source::ConsoleClient(stream)) =
                        sources.remove(&key)
                {
                    let _ = self.epoll.delete(&stream);
                }
                for source in accepted {
                    let t = token();
                    let added = match &source {
                        Source::ApiClient { stream, .. } | Source::ConsoleClient(stream) => {
                            self.watch(stream, t, readable)
                        }
                        _ => Ok(()),
                    };
                    if added.is_ok() {
                        sources.insert(t, source);
                    }
                }
            }
        }
    }
}

/// Reads requests from a control client and answers them; true when the client is gone.
fn serve_api(
    stream: &mut UnixStream,
    buffer: &mut Vec<u8>,
    context: &LoopContext,
    state: &mut State,
) -> bool {
    let mut chunk = [0u8; 1024];
    let mut gone = false;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                gone = true;
                break;
            }
            Ok(len) => buffer.extend_from_slice(&chunk[..len]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
        let line: Vec<u8> = buffer.drain(..=end).collect();
        let response = match control::parse(&String::from_utf8_lossy(&line)) {
            Ok(request) => answer(request, context, state),
            Err(message) => Response::error(message),
        };
        if stream.write_all(response.to_line().as_bytes()).is_err() {
            return true;
        }
        if *state == State::Stopping {
            context.exit.request(ExitReason::Stopped);
        }
    }
    if buffer.len() > MAX_REQUEST {
        let response = Response::error(format!(
            "request longer than {MAX_REQUEST} bytes without a newline"
        ));
        let _ = stream.write_all(response.to_line().as_bytes());
        return true;
    }
    gone
}

fn answer(request: Request, context: &LoopContext, state: &mut State) -> Response {
    match request {
        Request::Status => Response::status(status(context, *state)),
        Request::Shutdown => {
            if let Err(error) = context.ged.press_power_button() {
                return Response::error(format!(
                    "cannot raise the power button's interrupt: {error}; stop the VM instead"
                ));
            }
            if *state == State::Running {
                *state = State::ShuttingDown;
            }
            Response::state(*state)
        }
        Request::CtrlAltDel => {
            lock(&context.i8042).ctrl_alt_del();
            if *state == State::Running {
                *state = State::ShuttingDown;
            }
            Response::state(*state)
        }
        Request::Stop => {
            *state = State::Stopping;
            Response::state(State::Stopping)
        }
    }
}

fn status(context: &LoopContext, state: State) -> Status {
    let (rss_kib, guest_rss_kib) = memory_usage(&context.guest_ranges);
    Status {
        state,
        pid: std::process::id(),
        vcpus: context.cpus,
        memory_mib: context.memory_mib,
        uptime_ms: context.started.elapsed().as_millis() as u64,
        rss_kib,
        guest_rss_kib,
    }
}

/// The process's resident memory and the part of it inside `guest` ranges, in KiB, from
/// /proc/self/smaps (zeros where it cannot be read).
pub fn memory_usage(guest: &[(u64, u64)]) -> (u64, u64) {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return (0, 0);
    };
    smaps_usage(&smaps, guest)
}

/// [`memory_usage`] over the text of an smaps file.
pub fn smaps_usage(smaps: &str, guest: &[(u64, u64)]) -> (u64, u64) {
    let mut total = 0;
    let mut in_guest = 0;
    let mut current_is_guest = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            current_is_guest = guest
                .iter()
                .any(|(base, len)| start >= *base && end <= base + len);
            continue;
        }
        if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += kib;
            if current_is_guest {
                in_guest += kib;
            }
        }
    }
    (total, in_guest)
}

/// Passes a console client's bytes to the UART; true when the client is gone.
fn feed_console(stream: &mut UnixStream, serial: &Arc<Mutex<SerialDevice>>) -> bool {
    let mut chunk = [0u8; 256];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(len) => {
                // What does not fit in the UART's FIFO is dropped, as on a real line.
                let _ = lock(serial).enqueue_raw_bytes(&chunk[..len]);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rss_is_split_into_guest_and_vmm_memory() {
        let smaps = "\
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:                 512 kB
55d000000000-55d000100000 r-xp 00000000 08:01 42 /usr/bin/gitvisor-vmm
Size:               1024 kB
Rss:                 900 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  16 kB
";
        let guest = [(0x7f00_0000_0000, 128 << 20)];
        assert_eq!(smaps_usage(smaps, &guest), (1428, 512));
    }
}
