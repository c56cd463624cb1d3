//! `runc`, run as a command under gitvisor's own runtime root (`runc --root DIR`), never
//! through a shell: every argument is passed as argv, container ids are resource names
//! (validated by the loader), and each call has a timeout after which runc is killed
//! (`kill_on_drop`), so a hung runtime never blocks the async runtime or the run.
//!
//! "Already done" is accepted only where runc's answer proves it: deleting or signalling
//! a container that does not exist (`container does not exist`), signalling one whose
//! process is gone (`container not running`, `process already finished`).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use super::seam::{HostError, RuntimeStatus};

/// How long one runc command may take.
pub const RUNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What systemd hands gitvisor's service and must not reach runc or the supervisor.
/// runc forwards `NOTIFY_SOCKET` into the container and `run --detach` then waits for
/// the *container* to send `READY=1` (most never do: the create hangs until its
/// timeout); `LISTEN_FDS` would pass gitvisor's sockets into the container.
pub const SERVICE_VARIABLES: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// The runc binary and gitvisor's runtime root.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
}

/// One entry of `runc list --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ListEntry {
    pub id: String,
    #[serde(default)]
    pub pid: u32,
    pub status: String,
    #[serde(default)]
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl ListEntry {
    pub fn status(&self) -> Option<RuntimeStatus> {
        RuntimeStatus::parse(&self.status)
    }
}

impl Runc {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runc {
            binary: PathBuf::from("runc"),
            root: root.into(),
        }
    }

    /// The command line (`runc --root R ARGS`), not started.
    pub fn command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for variable in SERVICE_VARIABLES {
            command.env_remove(variable);
        }
        command
    }

    /// Runs runc with `args` to completion; its stdout on success.
    pub async fn run<I, S>(&self, args: I) -> Result<String, HostError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut command = self.command(&args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = self.output(command, &args).await?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(self.failure(&args, output.status, &output.stderr))
        }
    }

    /// Waits for `command` (made by [`Runc::command`]) with the timeout.
    pub async fn output(
        &self,
        mut command: tokio::process::Command,
        args: &[OsString],
    ) -> Result<std::process::Output, HostError> {
        let program = self.program();
        let child = command.spawn().map_err(|source| HostError::Spawn {
            program: program.clone(),
            source,
        })?;
        match tokio::time::timeout(RUNC_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(source)) => Err(HostError::Spawn { program, source }),
            Err(_) => Err(HostError::Timeout {
                program,
                args: show(args),
                after: RUNC_TIMEOUT,
            }),
        }
    }

    pub fn failure(
        &self,
        args: &[OsString],
        status: std::process::ExitStatus,
        stderr: &[u8],
    ) -> HostError {
        HostError::Command {
            program: self.program(),
            args: show(args),
            status: status.to_string(),
            stderr: runc_message(&String::from_utf8_lossy(stderr)),
        }
    }

    fn program(&self) -> String {
        self.binary.display().to_string()
    }

    /// Every container under the root: one `runc list`. A root that does not exist yet
    /// holds none (and runc is not asked, which would create the directory).
    pub async fn list(&self) -> Result<Vec<ListEntry>, HostError> {
        if !self.root.is_dir() {
            return Ok(Vec::new());
        }
        let stdout = self.run(["list", "--format", "json"]).await?;
        let entries: Option<Vec<ListEntry>> = serde_json::from_str(stdout.trim()).map_err(|e| {
            HostError::Unexpected(format!("runc list printed what is not its JSON list: {e}"))
        })?;
        Ok(entries.unwrap_or_default())
    }

    pub async fn start(&self, id: &str) -> Result<(), HostError> {
        self.run(["start", id]).await.map(drop)
    }

    /// Sends `signal` to the container's init; a container that is gone or whose
    /// process has exited counts as signalled.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), HostError> {
        tolerate(
            self.run(["kill", id, signal]).await.map(drop),
            &["does not exist", "not running", "process already finished"],
        )
    }

    /// `runc delete --force`: a container that does not exist counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), HostError> {
        tolerate(
            self.run(["delete", "--force", id]).await.map(drop),
            &["does not exist"],
        )
    }

    /// `runc state`: the container's status now, `None` when it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<RuntimeStatus>, HostError> {
        Ok(self.state(id).await?.and_then(|entry| entry.status()))
    }

    /// `runc state`: the container as the runtime has it (status, pid, annotations),
    /// `None` when it does not exist (or the root does not yet: runc is not asked, which
    /// would create the directory).
    pub async fn state(&self, id: &str) -> Result<Option<ListEntry>, HostError> {
        if !self.root.is_dir() {
            return Ok(None);
        }
        match self.run(["state", id]).await {
            Ok(stdout) => serde_json::from_str(&stdout).map(Some).map_err(|e| {
                HostError::Unexpected(format!("runc state printed what is not its JSON: {e}"))
            }),
            Err(HostError::Command { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The root directory for `runc --root`.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// runc's subcommands that make or change a container from its declaration.
const REFUSABLE: &[&str] = &["create", "run", "update", "exec"];

/// Words of a runc failure whose cause may pass by itself (the kernel busy or short of
/// memory for a moment, runc killed before it could say why).
const PASSING: &[&str] = &[
    "resource temporarily unavailable",
    "device or resource busy",
    "cannot allocate memory",
    "interrupted system call",
    "runc gave no reason",
    "signal: ",
];

/// What a failed runc command `args` (as shown: `create web`) answering `message` asks
/// for. runc refusing to make or change a container (`create`, `run`, `update`,
/// `exec`) over what it was given (a command the image lacks, a user or mount it
/// cannot set up, a limit the kernel refuses) answers the same on every retry until
/// the declaration or the host changes: it needs the user, and the controller waits for
/// a new revision instead of retrying for ever. A refusal whose message names a passing
/// cause, and a failure of any other command (`start`, `kill`, `delete`, `state`,
/// `list`), may succeed later: transient.
pub fn failure_class(args: &str, message: &str) -> crate::contract::FailureClass {
    use crate::contract::FailureClass;
    let refusable = args
        .split_whitespace()
        .next()
        .is_some_and(|command| REFUSABLE.contains(&command));
    let lowered = message.to_lowercase();
    if refusable && !PASSING.iter().any(|words| lowered.contains(words)) {
        FailureClass::NeedsUser
    } else {
        FailureClass::Transient
    }
}

fn tolerate(result: Result<(), HostError>, already: &[&str]) -> Result<(), HostError> {
    match result {
        Err(HostError::Command { ref stderr, .. })
            if already.iter().any(|phrase| stderr.contains(phrase)) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn show(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// runc's message from its stderr: the `msg="…"` of its last log line when it logs in
/// logfmt, else the last non-empty line.
pub fn runc_message(stderr: &str) -> String {
    let last = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim();
    if let Some(start) = last.find("msg=\"") {
        let rest = &last[start + 5..];
        let mut message = String::new();
        let mut escaped = false;
        for c in rest.chars() {
            match (escaped, c) {
                (true, c) => {
                    message.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => return message,
                (false, c) => message.push(c),
            }
        }
        return message;
    }
    last.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runcs_refusals_to_make_or_change_a_container_need_the_user() {
        use crate::contract::FailureClass::{NeedsUser, Transient};
        let not_found = "runc create web failed (exit status: 1): runc create failed: unable to start container process: exec: \"/nonexistent\": stat /nonexistent: no such file or directory";
        assert_eq!(failure_class("create web", not_found), NeedsUser);
        assert_eq!(
            failure_class("update --memory 0 web", "invalid memory value"),
            NeedsUser
        );
        assert_eq!(failure_class("run web", "bad mount"), NeedsUser);
        // A passing cause, or runc killed before it could say why.
        assert_eq!(
            failure_class("create web", "mkdir: Resource temporarily unavailable"),
            Transient
        );
        assert_eq!(
            failure_class(
                "create web",
                "runc create web failed (signal: 9 (SIGKILL)): runc gave no reason"
            ),
            Transient
        );
        // Other commands may succeed later.
        assert_eq!(failure_class("start web", "boom"), Transient);
        assert_eq!(failure_class("delete --force web", "busy"), Transient);
        assert_eq!(failure_class("", "injected"), Transient);
    }

    #[test]
    fn the_message_is_taken_from_runcs_log_line() {
        let stderr = "time=\"2026-11-27T15:03:36Z\" level=error msg=\"container does not exist\"\n";
        assert_eq!(runc_message(stderr), "container does not exist");
        assert_eq!(
            runc_message("runc create failed: chdir /x: no such file or directory\n"),
            "runc create failed: chdir /x: no such file or directory"
        );
        assert_eq!(runc_message("a msg=\"say \\\"hi\\\"\" x"), "say \"hi\"");
    }

    #[test]
    fn a_list_of_none_is_empty_and_annotations_are_read() {
        let entries: Option<Vec<ListEntry>> = serde_json::from_str("null").unwrap();
        assert!(entries.is_none());
        let entries: Vec<ListEntry> = serde_json::from_str(
            r#"[{"ociVersion":"1.0.2-dev","id":"c2","pid":1466,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-11-27T14:59:11Z","annotations":{"gitvisor.dev/managed":"c2"},"owner":"root"}]"#,
        )
        .unwrap();
        assert_eq!(entries[0].status(), Some(RuntimeStatus::Running));
        assert_eq!(
            entries[0].annotations.as_ref().unwrap()["gitvisor.dev/managed"],
            "c2"
        );
    }

    #[test]
    fn systemds_service_variables_never_reach_runc() {
        let command = Runc::new("/run/gitvisor/runc").command(["list"]);
        let removed: Vec<String> = command
            .as_std()
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key.to_string_lossy().into_owned())
            .collect();
        for variable in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"] {
            assert!(
                removed.iter().any(|r| r == variable),
                "{variable}: {removed:?}"
            );
        }
    }
}
