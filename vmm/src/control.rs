//! The control API: a unix stream socket taking one JSON object per line and answering
//! each with one JSON object on a line. Requests:
//!
//! - `{"command":"status"}` → `{"ok":true,"state":"running",...}` with the pid, vCPUs,
//!   memory, uptime and the process's memory use;
//! - `{"command":"shutdown"}` → presses the ACPI power button (the GED of
//!   [`crate::devices::ged`]) and answers at once; the process exits when the guest powers
//!   off. A Linux guest acts on the press only if something listens for it: systemd-logind
//!   does by default, busybox `acpid` does (with the `button` and `evdev` modules loaded
//!   and `/etc/acpi/PWRF/*` or an `/etc/acpid.conf` action for `PWRF`); a guest with
//!   neither ignores it, and the caller's timeout then ends with `stop`;
//! - `{"command":"ctrl-alt-del"}` → types Ctrl+Alt+Del on the i8042 keyboard and answers
//!   at once; for guests without ACPI (or that run nothing for the power button): Linux's
//!   init takes it as a request to reboot, and the process exits when the guest resets.
//!   It is a request of its own rather than part of `shutdown`: Linux reads it as
//!   "reboot", the power button as "power off", and pressing both would leave which one
//!   wins to timing;
//! - `{"command":"stop"}` → answers, then ends the process at once (a hard power-off).
//!
//! Errors answer `{"ok":false,"error":"..."}`; the connection stays usable.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Shutdown,
    CtrlAltDel,
    Stop,
}

/// The guest's state as the VMM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// vCPUs are running.
    Running,
    /// `shutdown` or `ctrl-alt-del` was sent; waiting for the guest to power off or reset.
    ShuttingDown,
    /// The process is exiting.
    Stopping,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub pid: u32,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub uptime_ms: u64,
    /// The VMM process's resident memory, guest pages it touched included.
    pub rss_kib: u64,
    /// The part of `rss_kib` that is guest memory.
    pub guest_rss_kib: u64,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn state(state: State) -> Self {
        Response {
            ok: true,
            state: Some(state),
            status: None,
            error: None,
        }
    }

    pub fn status(status: Status) -> Self {
        Response {
            ok: true,
            state: Some(status.state),
            status: Some(status),
            error: None,
        }
    }

    pub fn error(message: String) -> Self {
        Response {
            ok: false,
            state: None,
            status: None,
            error: Some(message),
        }
    }

    /// The response as one line.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|error| {
            format!(r#"{{"ok":false,"error":"cannot encode the answer: {error}"}}"#)
        });
        line.push('\n');
        line
    }
}

/// Parses one request line.
pub fn parse(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|error| {
        format!(
            "cannot parse the request {:?}: {error}; send one JSON object per line, like {{\"command\":\"status\"}}",
            line.trim()
        )
    })
}

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the VMM's control socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the VMM's control socket {path} failed mid-request: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the VMM at {path} answered something that is not a response: {line:?}")]
    Garbled { path: String, line: String },
}

/// Sends one request to the control socket at `path` and reads the answer (a blocking
/// client, for tools and tests).
pub fn call(path: &Path, request: Request) -> Result<Response, ClientError> {
    let name = path.display().to_string();
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: name.clone(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: name.clone(),
        source,
    };
    let mut line = serde_json::to_string(&request).map_err(|error| ClientError::Io {
        path: name.clone(),
        source: std::io::Error::other(error),
    })?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|_| ClientError::Garbled {
        path: name.clone(),
        line: answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_objects() {
        assert_eq!(parse(r#"{"command":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse(" {\"command\":\"shutdown\"}\n"),
            Ok(Request::Shutdown)
        );
        assert_eq!(parse(r#"{"command":"stop"}"#), Ok(Request::Stop));
        assert_eq!(
            parse(r#"{"command":"ctrl-alt-del"}"#),
            Ok(Request::CtrlAltDel)
        );
        let error = parse(r#"{"command":"reboot"}"#).expect_err("unknown");
        assert!(error.contains("reboot"), "{error}");
        assert!(parse("status").is_err());
    }

    #[test]
    fn responses_are_one_line_and_round_trip() {
        let response = Response::state(State::ShuttingDown);
        let line = response.to_line();
        assert_eq!(line, "{\"ok\":true,\"state\":\"shutting-down\"}\n");
        assert_eq!(
            serde_json::from_str::<Response>(&line).expect("parses"),
            response
        );
        let error = Response::error("no".to_string()).to_line();
        assert_eq!(error, "{\"ok\":false,\"error\":\"no\"}\n");
    }
}
