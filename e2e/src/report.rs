//! Telling people: whether the suite can run (root), loud lines past libtest's output
//! capture, and skips that say so.
//!
//! A skip is not a pass: in CI (`CI=true` or `CI=1`, as GitHub Actions and `.ci/run` set
//! it) the machine is meant to have every tool and kernel feature, so a test that would
//! skip there fails instead, naming what is missing. Locally a skip is a loud
//! `SKIPPED (<why>): <test>` line that `.ci/run` counts into its summary.

use std::thread;

/// Whether this process runs as root (effective uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Writes a line straight to the process's stderr, bypassing libtest's output capture, so
/// it shows even when the test passes (skips, stale-binary warnings, kernel notes).
pub fn loud(message: &str) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{message}");
    let _ = stderr.flush();
}

/// The running test's full name (libtest names each test's thread after it), else
/// `fallback`.
pub fn current_test_name(fallback: &str) -> String {
    match thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => fallback.to_owned(),
    }
}

/// Prints the loud skip line `SKIPPED (<why>): <test>`; in CI ([`in_ci`]) panics with it
/// instead, so the test fails and says what the machine lacks.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED ({why}): {test}");
    if in_ci() {
        panic!("{line}\nCI=true: a skip is a failure in CI; install what is missing (.ci/deps/)");
    }
    loud(&line);
}

/// Whether this run is CI's: `CI` is `true` or `1` (any case).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| {
        let value = value.trim();
        value == "1" || value.eq_ignore_ascii_case("true")
    })
}
