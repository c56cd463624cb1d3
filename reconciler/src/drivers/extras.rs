//! What the engine's commands and controller need of a kind beyond the driver contract,
//! in the engine's terms: a resource's log, its serial console, the kind's housekeeping.
//! A kind offers each through its [`Registration`](super::Registration); `cli/` and
//! `daemon/` reach them from the registry and know no kind.

use std::path::PathBuf;
use std::process::Command;

/// Why an extra could not be done; its message names the object, what failed and the fix.
pub type ExtraError = Box<dyn std::error::Error + Send + Sync>;

/// Where a resource's serial console is, and how to talk about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// The socket to connect to (one client at a time).
    pub socket: PathBuf,
    /// The resource as messages name it: `VM web`.
    pub owner: String,
    /// What to check when the socket does not answer.
    pub unreachable_hint: &'static str,
}

/// `gitvisor exec NAME [-i] [-t] -- COMMAND…`: what to run in the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Keep stdin attached (otherwise the command reads nothing).
    pub interactive: bool,
    /// Give the command a terminal.
    pub tty: bool,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// The command that runs an [`ExecRequest`] in a resource: gitvisor replaces itself with
/// it, so its exit status, signals and terminal are the command's.
#[derive(Debug)]
pub struct Prepared {
    pub command: Command,
    /// What to say when `command` cannot be started (its program is missing).
    pub cannot_start: String,
}

/// What a collection of a kind's store removed (or would remove): as text for people,
/// and as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub text: String,
    pub json: serde_json::Value,
}

/// A process of a kind's own that gitvisor runs as `gitvisor COMMAND ARGS…` (hidden):
/// a container's supervisor, for instance. It parses its own arguments.
#[derive(Debug, Clone, Copy)]
pub struct Helper {
    /// The hidden subcommand (`container-shim`).
    pub command: &'static str,
    /// Runs it with the arguments after the subcommand, to its end.
    pub run: fn(Vec<std::ffi::OsString>) -> std::process::ExitCode,
}
