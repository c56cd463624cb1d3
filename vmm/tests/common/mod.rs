//! Shared by the end-to-end tests: building a test guest from `guests/` with the host's
//! gcc, running the real `gitvisor-vmm` binary on it, and waiting for it with a bound.
//!
//! Tests need `/dev/kvm` and gcc; without them they say SKIPPED on stderr and return
//! (CI installs both and has KVM, so there they run; with `CI=true` a skip fails).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a guest may take before a test gives up on it (a guard, not a measurement).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Whether this machine can run the tests; prints why not.
pub fn can_run(test: &str) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        skip(test, "/dev/kvm cannot be opened read-write");
        return false;
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        skip(test, "gcc is not installed (it builds the test guests)");
        return false;
    }
    true
}

/// Says loudly (past libtest's capture) that `test` did not run and why; in CI (`CI=true`
/// or `CI=1`) panics with that line instead, since a skip is not a pass there.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED ({why}): {test}");
    let in_ci =
        std::env::var("CI").is_ok_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"));
    if in_ci {
        panic!("{line}\nCI=true: a skip is a failure in CI; install what is missing (.ci/deps/)");
    }
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests")
}

/// Builds the guest `name` (`guests/<name>.c` with the shared entry code) into `dir`.
pub fn build_guest(name: &str, dir: &Path) -> PathBuf {
    let guests = guests_dir();
    let output = dir.join(format!("{name}.elf"));
    let result = Command::new("gcc")
        // The flags every test guest is built with (`gcc.flags`, read by gcc itself).
        .arg(format!("@{}", guests.join("gcc.flags").display()))
        .arg(format!("-Wl,-T,{}", guests.join("guest.ld").display()))
        .arg(guests.join("start.S"))
        .arg(guests.join(format!("{name}.c")))
        .arg("-o")
        .arg(&output)
        .output()
        .expect("run gcc");
    assert!(
        result.status.success(),
        "building guest {name} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

/// The VMM binary under test.
pub fn vmm_binary() -> &'static str {
    env!("CARGO_BIN_EXE_gitvisor-vmm")
}

/// A running VMM, killed if the test ends first.
pub struct Vmm {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Vmm {
    /// Starts the VMM in the foreground on `kernel` with its files in a fresh directory,
    /// plus `extra` arguments.
    pub fn start(kernel: &Path, dir: tempfile::TempDir, extra: &[&str]) -> Vmm {
        Vmm::start_with(vmm_binary(), &[], kernel, dir, extra)
    }

    /// Like [`Vmm::start`], through `program` with `prefix` arguments (which name the VMM
    /// binary themselves), e.g. `ip netns exec NS gitvisor-vmm`.
    pub fn start_with(
        program: &str,
        prefix: &[&str],
        kernel: &Path,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> Vmm {
        let child = Command::new(program)
            .args(prefix)
            .arg("--kernel")
            .arg(kernel)
            .arg("--serial-log")
            .arg(dir.path().join("serial.log"))
            .arg("--log-file")
            .arg(dir.path().join("vmm.log"))
            .arg("--memory")
            .arg("64")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gitvisor-vmm");
        Vmm { child, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The serial log so far (bytes that are not UTF-8 shown as U+FFFD).
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("serial.log")).unwrap_or_default())
            .into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("vmm.log")).unwrap_or_default()
    }

    /// Waits for the process to end.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the VMM did not exit within {PATIENCE:?}; serial:\n{}\nlog:\n{}",
                self.serial(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the serial log contains `text`.
    pub fn wait_for_serial(&mut self, text: &str) {
        wait_until(
            || self.serial().contains(text),
            || {
                format!(
                    "serial never showed {text:?}; serial:\n{}\nlog:\n{}",
                    self.serial(),
                    self.log()
                )
            },
        );
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `done` until it holds, failing with `why()` after [`PATIENCE`].
pub fn wait_until(mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(10));
    }
}
