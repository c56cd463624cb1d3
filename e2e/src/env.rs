//! [`TestEnv`]: one test's world (a namespace, a state dir, a run dir) and gitvisor run
//! inside it, with the caller's `GITVISOR_*` environment cleared and colour off.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

use crate::locate::gitvisor_bin;
use crate::netns::Netns;
use crate::process::{Outcome, run_command};
use crate::report::{current_test_name, is_root, skip};

/// The `--host` every test passes, so `metadata.host` selection does not depend on the
/// machine's hostname.
pub const TEST_HOST: &str = "e2e-host";

/// One test's world: a namespace, a state dir and a run dir. Field order matters: the
/// namespace is deleted before the temporary directories.
#[derive(Debug)]
pub struct TestEnv {
    test: String,
    netns: Netns,
    state_dir: TempDir,
    run_dir: TempDir,
}

impl TestEnv {
    /// A fresh environment, or `None` (after printing `SKIPPED (needs root): <test>`)
    /// when not running as root.
    pub fn new(test: &str) -> Option<TestEnv> {
        if !is_root() {
            skip(&current_test_name(test), "needs root");
            return None;
        }
        // Resolve the binary first: a missing binary should fail before any setup.
        let _ = gitvisor_bin();
        Some(TestEnv {
            test: test.to_owned(),
            netns: Netns::create(test),
            state_dir: tempdir("state"),
            run_dir: tempdir("run"),
        })
    }

    pub fn test(&self) -> &str {
        &self.test
    }

    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// The `--run-dir` every gitvisor of this environment gets.
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// Throws the state store away and starts with an empty state dir: a "lost store".
    pub fn lose_state(&mut self) {
        self.state_dir = tempdir("state");
    }

    /// The `ip netns exec NS gitvisor --state-dir … ARGS` command, not started.
    pub fn gitvisor_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.other_gitvisor_command(self.state_dir.path(), self.run_dir.path(), args)
    }

    /// The same command for another gitvisor in this namespace, with its own state and
    /// run dirs (two instances side by side).
    pub fn other_gitvisor_command<I, S>(&self, state_dir: &Path, run_dir: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.netns()])
            .arg(gitvisor_bin())
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--run-dir")
            .arg(run_dir)
            .args(["--host", TEST_HOST])
            .args(args);
        scrub_env(&mut command);
        command
    }

    /// Starts `gitvisor apply DIR` inside the namespace, its output discarded, for a test
    /// that kills it part-way.
    pub fn spawn_apply(&self, dir: &str) -> Child {
        self.gitvisor_command(["apply", dir])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start gitvisor apply")
    }

    /// Runs gitvisor inside the namespace to completion.
    pub fn gitvisor<I, S>(&self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.gitvisor_command(args))
    }

    /// `plan PATH --output json`, expecting success; returns the parsed plan.
    #[track_caller]
    pub fn plan_json(&self, path: &Path) -> Value {
        self.gitvisor([
            OsStr::new("plan"),
            path.as_os_str(),
            OsStr::new("--output"),
            OsStr::new("json"),
        ])
        .expect_code(0)
        .json()
    }

    /// `plan PATH --detailed-exitcode` (text output).
    pub fn plan_detailed(&self, path: &Path) -> Outcome {
        self.gitvisor([
            OsStr::new("plan"),
            path.as_os_str(),
            OsStr::new("--detailed-exitcode"),
        ])
    }

    /// `apply PATH`.
    pub fn apply(&self, path: &Path) -> Outcome {
        self.gitvisor([OsStr::new("apply"), path.as_os_str()])
    }

    /// `status --output json`, expecting success.
    #[track_caller]
    pub fn status_json(&self) -> Value {
        self.gitvisor(["status", "--output", "json"])
            .expect_code(0)
            .json()
    }
}

pub(crate) fn tempdir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("gv-e2e-{what}-"))
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// Removes the environment variables gitvisor reads, so the caller's shell cannot change
/// what a test does, and turns colour off.
fn scrub_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GITVISOR_") {
            command.env_remove(&key);
        }
    }
    command.env("NO_COLOR", "1");
}

/// Runs the gitvisor binary directly (no namespace, no root), with a throwaway state dir;
/// for commands that never touch the host (`validate`, `graph`, `schema`).
pub fn gitvisor_offline<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let state = tempdir("state");
    let run = tempdir("run");
    let mut command = Command::new(gitvisor_bin());
    command
        .arg("--state-dir")
        .arg(state.path())
        .arg("--run-dir")
        .arg(run.path())
        .args(["--host", TEST_HOST])
        .args(args);
    scrub_env(&mut command);
    run_command(command)
}
