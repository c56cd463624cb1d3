//! The systemd notification protocol (`sd_notify(3)`), written out: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET` (a path, or an abstract
//! name written `@name`). Without the variable every call does nothing, so the same
//! binary runs under systemd (`Type=notify`), another supervisor, or a terminal.
//!
//! What the controller sends: `READY=1` with a `STATUS=` after its first reconcile
//! attempt, `STATUS=` after each later one, `WATCHDOG=1` every half `WatchdogSec`
//! (`WATCHDOG_USEC`, for this pid), and `STOPPING=1` on SIGTERM. A send that fails is
//! logged and otherwise ignored: a supervisor that went away must not stop the
//! controller.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; does nothing when `NOTIFY_SOCKET` was not set.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|value| {
            let address = address(&value)?;
            match UnixDatagram::unbound() {
                Ok(socket) => {
                    // A full receive queue must not stall the controller.
                    if let Err(error) = socket.set_nonblocking(true) {
                        tracing::warn!(%error, "cannot make the NOTIFY_SOCKET sender non-blocking");
                    }
                    Some((socket, address))
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot create a socket to notify systemd; notifications are off");
                    None
                }
            }
        });
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier { target, watchdog }
    }

    /// Whether a supervisor listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1` (half the supervisor's timeout), if it asks.
    pub fn watchdog(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog)
    }

    /// `READY=1` and the status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        if let Err(error) = socket.send_to_addr(message.as_bytes(), address) {
            tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}

/// The socket address `NOTIFY_SOCKET` names: an absolute path, or `@` + an abstract name.
fn address(value: &OsStr) -> Option<SocketAddr> {
    let bytes = value.as_bytes();
    let parsed = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(value),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => {
            tracing::warn!(value = %value.to_string_lossy(), "NOTIFY_SOCKET is neither a path nor @abstract; notifications are off");
            return None;
        }
    };
    parsed
        .inspect_err(|error| tracing::warn!(%error, "NOTIFY_SOCKET is not a usable socket address; notifications are off"))
        .ok()
}

/// Half of `WATCHDOG_USEC`, when it is set, positive, and meant for `pid`.
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|usec| *usec > 0)?;
    if let Some(for_pid) = for_pid
        && for_pid.trim().parse::<u32>().ok()? != pid
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// Status text on one line: the protocol separates variables with newlines.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_and_only_for_this_pid() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn paths_and_abstract_names_are_addresses() {
        assert!(address(OsStr::new("/run/systemd/notify")).is_some());
        assert!(address(OsStr::new("@gitvisor-test")).is_some());
        assert!(address(OsStr::new("relative")).is_none());
        assert!(address(OsStr::new("")).is_none());
    }

    #[test]
    fn notifications_arrive_as_one_datagram_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: None,
        };
        notifier.ready("revision abc\napplied");
        let mut buffer = [0u8; 512];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(
            std::str::from_utf8(&buffer[..n]).unwrap(),
            "READY=1\nSTATUS=revision abc applied"
        );
        notifier.watchdog_ping();
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier {
            target: None,
            watchdog: Some(Duration::from_secs(1)),
        };
        notifier.ready("x");
        assert!(!notifier.enabled());
        assert_eq!(notifier.watchdog(), None);
    }
}
