//! Scenarios that need a kernel the CI host lacks, run inside one throwaway `virtme-ng`
//! guest: `vng --disable-kvm` boots Debian's `linux-image-amd64` under QEMU TCG over the
//! host's own file system (read-only except one shared directory). The LVM scenarios
//! (device-mapper, [`crate::lvm`]), the VLAN ones (bridge VLAN filtering and 802.1Q,
//! [`crate::vlans`]) and the KVM ones ([`crate::kvm`]: with `-cpu max` the guest's CPU has
//! `svm`, so its kernel gets a working nested `/dev/kvm`, [`GuestRun::with_qemu_opts`])
//! use it.
//!
//! # How
//!
//! 1. The host test calls [`GuestRun::prepare`]: root, `vng`, QEMU, a kernel image under
//!    `/boot` and the scenario's own tools must be there, or it skips loudly; a shared
//!    temporary directory is made.
//! 2. [`GuestRun::run`] boots **one** guest that runs a guest binary of this crate
//!    (`e2e/src/bin/*-guest.rs`, built with the tests) as
//!    `BIN --gitvisor GITVISOR --shared DIR`, its output in `DIR/guest.log`.
//! 3. The guest binary appends each scenario's outcome to `DIR/results.jsonl` as soon as
//!    it is known ([`report`]), so a guest that dies part-way still reports what ran;
//!    the host reads them with [`GuestRun::assert_all_passed`] and fails with every scenario that
//!    failed or did not report.
//!
//! Booting once per suite keeps the cost at one boot (about 20-45 s under TCG here) plus
//! the scenarios.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Outcome, loud};

/// What booting the guest may take, at worst, out of a run's deadline.
const GUEST_BOOT_ALLOWANCE: Duration = Duration::from_secs(120);

/// The guest's vCPUs (under TCG, more than the host's cores only slows it down).
const GUEST_CPUS: &str = "2";

/// How much of the guest's console a failure shows.
const CONSOLE_LINES_KEPT: usize = 80;

/// A guest run's shared directory and the kernel it boots.
pub struct GuestRun {
    shared: tempfile::TempDir,
    kernel: PathBuf,
    label: String,
    /// Extra options for vng's QEMU (`-o`), e.g. `-cpu max`.
    qemu_opts: Option<String>,
}

/// One scenario's outcome, as the guest reported it.
#[derive(Debug, Clone)]
struct ScenarioResult {
    name: String,
    ok: bool,
    detail: String,
}

impl GuestRun {
    /// Checks the host can boot the guest; `None` (after a loud SKIPPED line) when not.
    /// `tools` are the scenario's own programs, each with the CI script that installs it.
    pub fn prepare(test: &str, label: &str, tools: &[(&str, &str)]) -> Option<GuestRun> {
        if !crate::is_root() {
            crate::skip(test, "needs root");
            return None;
        }
        let guest_tools = [
            ("vng", ".ci/deps/volume.sh"),
            ("qemu-system-x86_64", ".ci/deps/volume.sh"),
        ];
        for (tool, script) in guest_tools.iter().chain(tools) {
            if which(tool).is_none() {
                crate::skip(
                    test,
                    &format!("{tool} is not installed; {script} installs it"),
                );
                return None;
            }
        }
        let Some(kernel) = kernel_image() else {
            crate::skip(test, "no /boot/vmlinuz-*; apt install linux-image-amd64");
            return None;
        };
        let shared = tempfile::Builder::new()
            .prefix(&format!("gv-e2e-{label}-"))
            .tempdir()
            .expect("a temporary directory for the guest");
        Some(GuestRun {
            shared,
            kernel,
            label: label.to_owned(),
            qemu_opts: None,
        })
    }

    /// The same run with `opts` given to vng's QEMU (`vng -o=OPTS`): `-cpu max` gives the
    /// TCG guest an AMD CPU with `svm` and `npt`, so its kernel loads `kvm_amd`.
    pub fn with_qemu_opts(mut self, opts: &str) -> GuestRun {
        self.qemu_opts = Some(opts.to_owned());
        self
    }

    /// The kernel image the guest boots (the newest `/boot/vmlinuz-*`).
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    pub fn shared(&self) -> &Path {
        self.shared.path()
    }

    /// Boots the guest with `memory` and runs `guest_binary` in it, killed past
    /// `deadline`; returns `vng`'s outcome (its exit code says little: the results file
    /// is the answer).
    pub fn run(
        &self,
        guest_binary: &Path,
        gitvisor: &Path,
        memory: &str,
        deadline: Duration,
    ) -> Outcome {
        let shared = self.shared().to_string_lossy().into_owned();
        // The guest binary gets the deadline less a generous boot: should it hang,
        // `timeout` ends it while the guest can still sync its log and results and
        // power off, so the host learns where it stopped.
        let budget = deadline
            .saturating_sub(GUEST_BOOT_ALLOWANCE)
            .as_secs()
            .max(60);
        let inner = format!(
            // 9p keeps written data in the guest's cache until synced.
            "timeout -k 10 {budget} {} --gitvisor {} --shared {shared} > {shared}/guest.log 2>&1; \
             echo \"guest binary exit status: $?\" >> {shared}/guest.log; sync",
            guest_binary.display(),
            gitvisor.display()
        );
        let started = Instant::now();
        let mut vng = Command::new("vng");
        vng.args([
            "--disable-kvm",
            // The kernel's console on vng's output: a lockup or an OOM kill shows there.
            "--verbose",
            // The same guest on every host, whatever its core count.
            "--cpus",
            GUEST_CPUS,
            "--memory",
            memory,
            "--rwdir",
            &shared,
        ]);
        if let Some(opts) = &self.qemu_opts {
            vng.arg(format!("--qemu-opts={opts}"));
        }
        vng.arg("--run").arg(&self.kernel).args(["--", &inner]);
        let (mut outcome, finished) = crate::process::run_until(vng, deadline);
        outcome.stdout = last_lines(&outcome.stdout, CONSOLE_LINES_KEPT);
        outcome.stderr = last_lines(&outcome.stderr, CONSOLE_LINES_KEPT);
        loud(&format!(
            "{} guest: boot and scenarios took {:.0}s{}",
            self.label,
            started.elapsed().as_secs_f64(),
            if finished {
                String::new()
            } else {
                format!(", past the {deadline:?} deadline: vng and its QEMU were killed")
            }
        ));
        outcome
    }

    /// What the guest wrote to `guest.log`.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.shared().join("guest.log")).unwrap_or_default()
    }

    /// The results the guest reported, in order.
    fn results(&self) -> Vec<ScenarioResult> {
        let text = std::fs::read_to_string(self.shared().join("results.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|value| ScenarioResult {
                name: value["name"].as_str().unwrap_or_default().to_owned(),
                ok: value["ok"].as_bool().unwrap_or(false),
                detail: value["detail"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Logs each scenario's time from the guest log, then panics with every scenario in
    /// `expected` that failed or did not report, the guest log and `vng`'s `outcome`.
    #[track_caller]
    pub fn assert_all_passed(&self, expected: &[&str], outcome: &Outcome) {
        let log = self.log();
        for line in log
            .lines()
            .filter(|l| l.contains(": ok in ") || l.contains(": FAILED in "))
        {
            loud(&format!("{} guest: {line}", self.label));
        }
        let failures = self.failures(expected);
        assert!(
            failures.is_empty(),
            "{}\n--- guest log ---\n{log}\n--- vng (the console's last lines) ---\n{outcome}",
            failures.join("\n\n"),
        );
    }

    /// Every scenario in `expected` that failed or did not report, and any other
    /// reported failure (setup); empty when all passed. Logs each success loudly.
    fn failures(&self, expected: &[&str]) -> Vec<String> {
        let results = self.results();
        let mut failures = Vec::new();
        for name in expected {
            match results.iter().find(|r| r.name == *name) {
                Some(result) if result.ok => loud(&format!("{} guest: ok: {name}", self.label)),
                Some(result) => failures.push(format!("FAILED: {name}\n{}", result.detail)),
                None => failures.push(format!("NOT RUN: {name}")),
            }
        }
        for result in results
            .iter()
            .filter(|r| !expected.contains(&r.name.as_str()))
        {
            if !result.ok {
                failures.push(format!("FAILED: {}\n{}", result.name, result.detail));
            }
        }
        failures
    }
}

/// The last `count` lines of `text`.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// In the guest: appends one scenario's outcome to `shared/results.jsonl`, synced.
pub fn report(shared: &Path, name: &str, result: &Result<(), String>) {
    let line = json!({
        "name": name,
        "ok": result.is_ok(),
        "detail": result.as_ref().err().cloned().unwrap_or_default(),
    });
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(shared.join("results.jsonl"))
    {
        let _ = writeln!(file, "{line}");
        let _ = file.sync_all();
    }
}

/// One guest scenario: its name (as the host expects it) and what it runs.
pub type Scenario<G> = (&'static str, fn(&G) -> Result<(), String>);

/// In the guest: runs each named scenario in order (a panic counts as its failure),
/// prints its verdict and time, and reports it to `shared`; fails when any failed.
pub fn run_scenarios<G>(
    shared: &Path,
    guest: &G,
    scenarios: &[Scenario<G>],
) -> std::process::ExitCode {
    let mut failed = false;
    for (name, scenario) in scenarios {
        eprintln!("{name}: started");
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(guest)))
            .unwrap_or_else(|panic| {
                Err(panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()))
            });
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "{name}: {verdict} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        failed |= result.is_err();
        report(shared, name, &result);
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// In the guest: a copy of `binary` in the guest's memory (`/run`), to run instead of
/// the original. The host's file system reaches the guest over 9p without a cache, so
/// every page of the (large, debug) binary would be read again on every run.
pub fn copy_into_guest(binary: &Path) -> Result<PathBuf, String> {
    let local = PathBuf::from("/run/gitvisor-under-test");
    std::fs::copy(binary, &local)
        .map_err(|error| format!("cannot copy {} into the guest: {error}", binary.display()))?;
    Ok(local)
}

/// In the guest: `--gitvisor BIN --shared DIR` from the command line.
pub fn guest_args(usage: &str) -> Option<(PathBuf, PathBuf)> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    match (arg("--gitvisor"), arg("--shared")) {
        (Some(gitvisor), Some(shared)) => Some((gitvisor, shared)),
        _ => {
            eprintln!("usage: {usage} --gitvisor BIN --shared DIR");
            None
        }
    }
}

/// The newest `/boot/vmlinuz-*`.
fn kernel_image() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels.pop()
}

/// Where `program` is on `PATH` (or in the sbin directories).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A guest scenario's outcome: `Err` says what was wrong.
pub type Check = Result<(), String>;

/// `Ok` when `condition` holds, else the message.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Check {
    if condition { Ok(()) } else { Err(message()) }
}

/// `Ok` when the command exited with `expected`, else its whole outcome.
pub fn code(outcome: &Outcome, expected: i32) -> Check {
    ensure(outcome.code == Some(expected), || {
        format!("expected exit code {expected}\n{outcome}")
    })
}

/// Runs a tool; its stdout, or the whole outcome as the error.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args);
    stdout_of(command)
}

/// Runs `command`; its stdout, or the whole outcome as the error.
pub fn stdout_of(command: Command) -> Result<String, String> {
    let outcome = crate::run_command(command);
    if outcome.code == Some(0) {
        Ok(outcome.stdout)
    } else {
        Err(outcome.to_string())
    }
}

/// Runs a tool in network namespace `ns`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    sh("ip", &all)
}
