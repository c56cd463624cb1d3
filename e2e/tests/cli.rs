//! The command-line contract of docs/cli.md, against the real binary: exit codes, JSON
//! errors, no panic on a closed stdout or an out-of-range flag, the prune rules across
//! sources, decommissioning through a `PrunePolicy`, `--target`, drift in `status`, and
//! `apply`'s per-resource lines.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use gitvisor_e2e::{
    Manifests, QUICKSTART_FILE, TestEnv, assert_contains, bridge_manifest, example_dir,
    gitvisor_offline, non_noop_actions, status_states,
};
use serde_json::Value;

/// The write end of a pipe whose only reader has already exited: every write to it
/// fails with EPIPE, deterministically.
fn closed_pipe() -> Stdio {
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot start `true`");
    let writer = reader.stdin.take().expect("piped stdin");
    reader.wait().expect("cannot wait for `true`");
    Stdio::from(writer)
}

/// Runs `command` with stdout a closed pipe; returns its exit code and stderr.
fn run_with_closed_stdout(mut command: Command) -> (Option<i32>, String) {
    command
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped());
    let output = command.output().expect("cannot run gitvisor");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn no_command_panics_on_a_closed_stdout() {
    let Some(env) = TestEnv::new("closedout") else {
        return;
    };
    let manifests = env.quickstart();
    let bad = Manifests::new();
    bad.write(
        "bad.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\n",
    );
    let path = manifests.path_str();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["validate", path], 0),
        (vec!["validate", path, "--output", "json"], 0),
        (vec!["validate", bad.path_str(), "--output", "json"], 1),
        (vec!["plan", path], 0),
        (vec!["plan", path, "--output", "json"], 0),
        (vec!["apply", path], 0),
        (vec!["apply", path], 0),
        (vec!["apply", path, "--output", "json"], 0),
        (vec!["status"], 0),
        (vec!["status", "--output", "json"], 0),
        (vec!["status", "--offline"], 0),
        (vec!["graph", path], 0),
        (vec!["graph", path, "--format", "mermaid"], 0),
        (vec!["doctor"], 0),
        (vec!["doctor", "--output", "json"], 0),
        (vec!["doctor", path], 0),
        (vec!["schema"], 0),
        (vec!["schema", "bridge"], 0),
        (vec!["completions", "bash"], 0),
        (vec!["--help"], 0),
        (vec!["plan", "--help"], 0),
        (vec!["--version"], 0),
        (vec!["plan"], 64),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run_with_closed_stdout(env.gitvisor_command(&args));
        assert!(
            !stderr.contains("panicked"),
            "`gitvisor {}` panicked on a closed stdout:\n{stderr}",
            args.join(" ")
        );
        assert_eq!(
            code,
            Some(expected),
            "`gitvisor {}` with a closed stdout:\n{stderr}",
            args.join(" ")
        );
    }
    // The apply that nobody read still converged the host and recorded it.
    let plan = env.plan_json(manifests.path());
    assert!(non_noop_actions(&plan).is_empty(), "{plan:#}");
    assert!(env.expect_link("br-lab").is_marked());
}

#[test]
fn out_of_range_flags_are_usage_errors_before_anything_is_written() {
    let Some(env) = TestEnv::new("flags") else {
        return;
    };
    let manifests = env.quickstart();
    for value in ["3000000000000000000", "0", "1025", "-3", "many"] {
        let outcome = env.gitvisor(["apply", manifests.path_str(), "--concurrency", value]);
        assert_eq!(outcome.code, Some(64), "--concurrency {value}\n{outcome}");
        assert!(!outcome.stderr.contains("panicked"), "{outcome}");
    }
    assert!(
        !env.state_dir().join("state.redb").exists(),
        "a rejected command line wrote the store"
    );
    assert!(
        env.link("br-lab").is_none(),
        "a rejected command line changed the host"
    );
    env.gitvisor(["apply", manifests.path_str(), "--concurrency", "1024"])
        .expect_code(0);
}

#[test]
fn usage_errors_exit_64_and_follow_the_output_format() {
    for args in [
        vec!["plan"],
        vec!["bogus"],
        vec!["apply", "x", "--prune", "--no-prune"],
        vec!["plan", "x", "--target", "Disk/x"],
        vec!["schema", "disk"],
    ] {
        let outcome = gitvisor_offline(&args);
        assert_eq!(outcome.code, Some(64), "{outcome}");
        assert!(outcome.stdout.is_empty(), "{outcome}");
    }
    let outcome = gitvisor_offline(["plan", "--output", "json", "--bogus", "x"]);
    assert_eq!(outcome.code, Some(64), "{outcome}");
    let error = outcome.json();
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("--bogus")),
        "{error:#}"
    );
    assert_eq!(error["diagnostics"], Value::Array(Vec::new()), "{error:#}");
}

#[test]
fn validate_and_plan_report_errors_as_json() {
    let bad = Manifests::new();
    bad.write("bad.yaml", &bridge_manifest("br-bad", &[], "  mtu: lots\n"));
    for command in ["validate", "plan"] {
        let outcome = gitvisor_offline([command, bad.path_str(), "--output", "json"]);
        assert_eq!(outcome.code, Some(1), "{outcome}");
        let error = outcome.json();
        assert_contains(
            error["error"].as_str().unwrap_or_default(),
            "revision rejected",
        );
        let first = &error["diagnostics"][0];
        assert!(
            first["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("bad.yaml")),
            "{error:#}"
        );
        assert_eq!(first["line"], 6, "{error:#}");
        assert!(first["column"].as_u64().is_some(), "{error:#}");
        assert_eq!(first["field"], "spec.mtu", "{error:#}");
        assert!(first["message"].as_str().is_some(), "{error:#}");
    }
    let good = example_dir("quickstart");
    let outcome = gitvisor_offline([
        OsStr::new("validate"),
        good.as_os_str(),
        OsStr::new("--output"),
        OsStr::new("json"),
    ])
    .expect_code(0);
    let valid = outcome.json();
    assert_eq!(valid["valid"], true, "{valid:#}");
    assert_eq!(valid["resources"], 2, "{valid:#}");
}

#[test]
fn plan_exit_codes() {
    let Some(env) = TestEnv::new("exitcodes") else {
        return;
    };
    let manifests = env.quickstart();
    assert_eq!(env.plan_detailed(manifests.path()).code, Some(2));
    env.gitvisor(["plan", manifests.path_str()]).expect_code(0);
    env.apply(manifests.path()).expect_code(0);
    assert_eq!(env.plan_detailed(manifests.path()).code, Some(0));

    // A plan with conflicts cannot converge (homelab's volume group does not exist
    // here; on a kernel without device-mapper its Volumes are unsupported, `?`, first):
    // exit 1, with or without the flag.
    let homelab = example_dir("homelab");
    let outcome = env.gitvisor([OsStr::new("plan"), homelab.as_os_str()]);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert!(
        outcome.stdout.contains("! Volume/") || outcome.stdout.contains("? Volume/"),
        "{outcome}"
    );
    assert_contains(&outcome.stderr, "cannot converge");
}

#[test]
fn applying_another_path_deletes_nothing_unless_confirmed() {
    let Some(env) = TestEnv::new("prunesrc") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);

    // `apply storage.yaml`: another file, which declares none of the bridges.
    let other = Manifests::new();
    let storage = other.write("storage.yaml", &bridge_manifest("br-st", &[], "{}"));
    let storage = storage.to_str().expect("UTF-8 path");
    let plan = env
        .gitvisor(["plan", storage, "--output", "json"])
        .expect_code(0)
        .json();
    let skipped: Vec<(&str, &str)> = plan["skipped"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or(""),
                        c["skip"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        skipped,
        [("br-lab", "otherSource"), ("br-svc", "otherSource")],
        "{plan:#}"
    );
    let text = env.gitvisor(["plan", storage]).expect_code(0);
    assert_contains(&text.stdout, "Not deleted: 2 resources");
    assert_contains(&text.stdout, "--prune");

    let outcome = env.gitvisor(["apply", storage]).expect_code(0);
    assert!(
        env.link("br-lab").is_some() && env.link("br-svc").is_some(),
        "{outcome}"
    );
    env.gitvisor(["apply", storage]).expect_code(0);
    assert!(
        env.link("br-lab").is_some(),
        "a second apply of the other file pruned"
    );
    env.gitvisor(["apply", storage, "--no-prune"])
        .expect_code(0);
    assert!(env.link("br-lab").is_some());

    env.gitvisor(["apply", storage, "--prune"]).expect_code(0);
    assert!(env.link("br-lab").is_none() && env.link("br-svc").is_none());
    assert!(env.link("br-st").is_some());
}

#[test]
fn an_emptied_repository_deletes_nothing_unless_confirmed() {
    let Some(env) = TestEnv::new("emptied") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    manifests.write(QUICKSTART_FILE, "# everything moved elsewhere\n");
    let plan = env.plan_json(manifests.path());
    assert!(non_noop_actions(&plan).is_empty(), "{plan:#}");
    assert_eq!(plan["summary"]["notPruned"], 2, "{plan:#}");
    env.apply(manifests.path()).expect_code(0);
    assert!(env.link("br-lab").is_some() && env.link("br-svc").is_some());
    env.gitvisor(["apply", manifests.path_str(), "--prune"])
        .expect_code(0);
    assert!(env.link("br-lab").is_none() && env.link("br-svc").is_none());
    assert!(status_states(&env.status_json()).is_empty());
}

/// A repository decommissions its host through git: the emptied-repository guard holds
/// until a `PrunePolicy` with `deleteUndeclared: true` is committed (one for another host
/// changes nothing); the plan says which way through it there is.
#[test]
fn a_prune_policy_in_the_manifests_decommissions_the_host() {
    let Some(env) = TestEnv::new("decomm") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    manifests.write(QUICKSTART_FILE, "# this host is being retired\n");
    let plan = env.gitvisor(["plan", manifests.path_str()]).expect_code(0);
    assert_contains(&plan.stdout, "PrunePolicy with deleteUndeclared: true");

    let policy = |host: &str| {
        format!(
            "apiVersion: gitvisor.dev/v1alpha1\nkind: PrunePolicy\nmetadata:\n  name: decommission\n{host}spec:\n  deleteUndeclared: true\n"
        )
    };
    manifests.write("decommission.yaml", &policy("  host: some-other-host\n"));
    env.apply(manifests.path()).expect_code(0);
    assert!(
        env.link("br-lab").is_some() && env.link("br-svc").is_some(),
        "a PrunePolicy for another host deleted this host's bridges"
    );

    manifests.write("decommission.yaml", &policy(""));
    let plan = env.plan_json(manifests.path());
    assert_eq!(plan["summary"]["delete"], 2, "{plan:#}");
    env.apply(manifests.path()).expect_code(0);
    assert!(env.link("br-lab").is_none() && env.link("br-svc").is_none());
    assert!(status_states(&env.status_json()).is_empty());
}

#[test]
fn several_paths_form_one_revision() {
    let Some(env) = TestEnv::new("paths") else {
        return;
    };
    let a = Manifests::new();
    let b = Manifests::new();
    a.write("a.yaml", &bridge_manifest("br-a", &[], "{}"));
    b.write(
        "b.yaml",
        &bridge_manifest("br-b", &["dependsOn: [Bridge/br-a]"], "{}"),
    );
    // br-b's dependency is declared under the other path.
    env.gitvisor(["validate", a.path_str(), b.path_str()])
        .expect_code(0);
    env.gitvisor(["validate", b.path_str()]).expect_code(1);
    env.gitvisor(["graph", a.path_str(), b.path_str()])
        .expect_code(0);
    env.gitvisor(["apply", a.path_str(), b.path_str()])
        .expect_code(0);
    assert!(env.link("br-a").is_some() && env.link("br-b").is_some());
    let plan = env
        .gitvisor(["plan", b.path_str(), a.path_str(), "--output", "json"])
        .expect_code(0)
        .json();
    assert!(non_noop_actions(&plan).is_empty(), "{plan:#}");
}

#[test]
fn a_target_changes_only_it_and_what_it_needs() {
    let Some(env) = TestEnv::new("target") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    let edited = manifests
        .read(QUICKSTART_FILE)
        .replace("mtu: 1500", "mtu: 1400")
        .replace("mtu: 9000", "mtu: 1450");
    manifests.write(QUICKSTART_FILE, &edited);
    manifests.write("extra.yaml", &bridge_manifest("br-x", &[], "{}"));
    env.gitvisor(["apply", manifests.path_str(), "--target", "bridge/br-svc"])
        .expect_code(0);
    assert_eq!(env.expect_link("br-svc").mtu, 1450);
    assert_eq!(
        env.expect_link("br-lab").mtu,
        1500,
        "br-lab is outside the target"
    );
    assert!(env.link("br-x").is_none(), "br-x is outside the target");

    let outcome = env.gitvisor(["plan", manifests.path_str(), "--target", "Bridge/nope"]);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert_contains(&outcome.stderr, "--target Bridge/nope");
}

#[test]
fn status_shows_drift_on_the_host() {
    let Some(env) = TestEnv::new("drifts") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    env.ip(["link", "set", "br-lab", "mtu", "1280"]);

    let text = env.gitvisor(["status"]).expect_code(0);
    assert_contains(&text.stdout, "Drifted: mtu 1500 → 1280 on the host");
    let status = env.status_json();
    let lab = status["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "br-lab"))
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(lab["state"], "Ready", "{status:#}");
    assert_eq!(lab["live"], "drifted", "{status:#}");
    assert_eq!(lab["drift"][0]["path"], "mtu", "{status:#}");
    assert_eq!(lab["drift"][0]["declared"], 1500, "{status:#}");
    assert_eq!(lab["drift"][0]["host"], 1280, "{status:#}");

    let offline = env.gitvisor(["status", "--offline"]).expect_code(0);
    assert!(!offline.stdout.contains("Drifted"), "{offline}");
    assert_contains(&offline.stdout, "--offline");
}

#[test]
fn apply_prints_a_line_per_resource_and_totals() {
    let Some(env) = TestEnv::new("applylines") else {
        return;
    };
    let manifests = env.quickstart();
    let outcome = env.apply(manifests.path()).expect_code(0);
    assert_contains(&outcome.stdout, "  + Bridge/br-lab  created  ");
    assert_contains(&outcome.stdout, "  + Bridge/br-svc  created  ");
    assert_contains(&outcome.stdout, "Apply complete: 2 created, 0 updated");
    assert!(
        !outcome.stdout.contains('\r') && !outcome.stdout.contains('\x1b'),
        "progress line or colour on a pipe:\n{outcome}"
    );
    manifests.write(
        QUICKSTART_FILE,
        &manifests
            .read(QUICKSTART_FILE)
            .replace("mtu: 9000", "mtu: 1500"),
    );
    let outcome = env.apply(manifests.path()).expect_code(0);
    assert_contains(&outcome.stdout, "  ~ Bridge/br-svc  updated mtu  ");
    assert_contains(
        &outcome.stdout,
        "1 updated, 0 replaced, 0 deleted, 1 unchanged",
    );
}

#[test]
fn help_and_completions() {
    let outcome = gitvisor_offline(["status", "--help"]).expect_code(0);
    assert!(
        !outcome.stdout.to_lowercase().contains(", error"),
        "{outcome}"
    );
    for command in ["plan", "apply", "status", "validate", "graph"] {
        let outcome = gitvisor_offline([command, "--help"]).expect_code(0);
        assert_contains(&outcome.stdout, "Global options:");
    }
    let outcome = gitvisor_offline(["graph", "--help"]).expect_code(0);
    assert_contains(&outcome.stdout, "mermaid");
    let outcome = gitvisor_offline(["completions", "bash"]).expect_code(0);
    assert_contains(&outcome.stdout, "VirtualMachine");
    let outcome = gitvisor_offline(["schema", "bridge"]).expect_code(0);
    assert_eq!(
        outcome.json(),
        gitvisor_offline(["schema", "Bridge"]).json()
    );
}
