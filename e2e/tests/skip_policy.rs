//! A skip is not a pass. In CI (`CI=true`) a test that would skip for a missing tool or
//! kernel feature fails, naming what is missing; elsewhere it passes with a loud
//! `SKIPPED (<why>): <test>` line that `.ci/run` counts in its summary.
//!
//! The policy is checked on the real harness: this test binary runs itself again with
//! [`skipping_test`] selected, once with `CI=true` and once without.

use std::process::Command;

use gitvisor_e2e::skip;

/// Set only by [`a_skip_fails_in_ci_and_is_a_loud_line_elsewhere`] for its child run.
const PROBE: &str = "GITVISOR_E2E_SKIP_PROBE";

/// Skips through the harness's [`skip`] when run as the probe child; otherwise there is
/// nothing to do.
#[test]
fn skipping_test() {
    if std::env::var_os(PROBE).is_some() {
        skip("skipping_test", "the skip policy's probe");
    }
}

/// Runs [`skipping_test`] alone in a child of this test binary with `ci` as `CI`.
fn run_probe(ci: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--exact",
            "skipping_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, "1")
        .env("CI", ci)
        .output()
        .expect("run the test binary again");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn a_skip_fails_in_ci_and_is_a_loud_line_elsewhere() {
    let line = "SKIPPED (the skip policy's probe): skipping_test";
    for ci in ["true", "1", "TRUE"] {
        let (passed, said) = run_probe(ci);
        assert!(!passed, "with CI={ci} a skip passed:\n{said}");
        assert!(
            said.contains(line),
            "with CI={ci} the failure does not say what skipped:\n{said}"
        );
        assert!(said.contains("1 failed"), "CI={ci}:\n{said}");
    }
    for ci in ["", "false", "0"] {
        let (passed, said) = run_probe(ci);
        assert!(passed, "with CI={ci:?} a skip failed:\n{said}");
        assert!(
            said.contains(line),
            "with CI={ci:?} the skip was silent:\n{said}"
        );
    }
}
