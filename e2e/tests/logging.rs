//! Log output on stderr, as journald or a CI job stores it: no colour codes when stderr
//! is not a terminal (even without `NO_COLOR`), never with `NO_COLOR`; `-v`/`-vv` raise
//! gitvisor's own level while dependencies stay at warn unless `RUST_LOG` or
//! `GITVISOR_LOG` ask for more.

use gitvisor_e2e::{Outcome, TestEnv, run_command};

/// `gitvisor ARGS apply QUICKSTART` in a fresh namespace, stderr piped, with `env` set
/// and `NO_COLOR` unset unless `env` sets it.
fn apply_with(test: &str, args: &[&str], env: &[(&str, &str)]) -> Option<Outcome> {
    let test_env = TestEnv::new(test)?;
    let manifests = test_env.quickstart();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["apply", manifests.path_str()]);
    let mut command = test_env.gitvisor_command(all);
    command.env_remove("NO_COLOR");
    for (key, value) in env {
        command.env(key, value);
    }
    Some(run_command(command).expect_code(0))
}

fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

/// gitvisor's own lines at `level` (`DEBUG`, `TRACE`): "<time> DEBUG <spans>: gitvisor::…".
fn own_lines<'a>(stderr: &'a str, level: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(&format!(" {level} ")) && l.contains(" gitvisor::"))
        .collect()
}

#[test]
fn verbose_logs_are_plain_text_and_gitvisors_own() {
    let Some(outcome) = apply_with("log-vv", &["-vv"], &[]) else {
        return;
    };
    let stderr = &outcome.stderr;
    assert!(
        !stderr.contains("\x1b["),
        "colour codes on a piped stderr:\n{outcome}"
    );
    assert!(
        !own_lines(stderr, "DEBUG").is_empty(),
        "-vv shows no gitvisor debug lines:\n{outcome}"
    );
    assert_eq!(
        lines_with(stderr, "netlink_proto"),
        Vec::<&str>::new(),
        "dependencies' trace lines at -vv"
    );
}

#[test]
fn one_v_is_debug_not_trace() {
    let Some(outcome) = apply_with("log-v", &["-v"], &[]) else {
        return;
    };
    assert!(!own_lines(&outcome.stderr, "DEBUG").is_empty(), "{outcome}");
    assert_eq!(lines_with(&outcome.stderr, " TRACE "), Vec::<&str>::new());
    assert!(!outcome.stderr.contains("\x1b["), "{outcome}");
}

#[test]
fn no_color_and_rust_log_are_honoured() {
    let Some(outcome) = apply_with(
        "log-env",
        &["-v"],
        &[("RUST_LOG", "netlink_proto=trace"), ("NO_COLOR", "1")],
    ) else {
        return;
    };
    assert!(
        !lines_with(&outcome.stderr, "netlink_proto").is_empty(),
        "RUST_LOG asked for netlink_proto traces:\n{outcome}"
    );
    assert!(!outcome.stderr.contains("\x1b["), "{outcome}");

    let Some(outcome) = apply_with(
        "log-gvlog",
        &[],
        &[("GITVISOR_LOG", "gitvisor=debug"), ("RUST_LOG", "trace")],
    ) else {
        return;
    };
    assert!(!own_lines(&outcome.stderr, "DEBUG").is_empty(), "{outcome}");
    assert_eq!(
        lines_with(&outcome.stderr, "netlink_proto"),
        Vec::<&str>::new(),
        "GITVISOR_LOG wins over RUST_LOG"
    );
}
