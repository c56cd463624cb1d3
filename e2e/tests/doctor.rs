//! `gitvisor doctor [PATH]`: per kind, whether this build has the driver and the host what
//! it needs; exit 1 exactly when a kind PATH declares cannot be applied here.

use gitvisor_e2e::{Manifests, Outcome, TestEnv, bridge_manifest};
use serde_json::Value;

/// A Container: the test runs gitvisor under `ip netns exec`, which mounts a fresh
/// `/sys` without `/sys/fs/cgroup`, so the host (as gitvisor sees it) cannot run it.
const CONTAINER: &str = "apiVersion: gitvisor.dev/v1alpha1
kind: Container
metadata:
  name: web
spec:
  image: /var/lib/images/web.oci
";

/// `doctor ARGS --output json` in the test's namespace, with its parsed report.
fn doctor_json(env: &TestEnv, args: &[&str]) -> (Outcome, Value) {
    let mut all = vec!["doctor"];
    all.extend(args);
    all.extend(["--output", "json"]);
    let outcome = env.gitvisor(all);
    let report = outcome.json();
    (outcome, report)
}

fn kinds(report: &Value) -> Vec<&str> {
    report["kinds"]
        .as_array()
        .map(|kinds| kinds.iter().filter_map(|k| k["kind"].as_str()).collect())
        .unwrap_or_default()
}

/// The stable shape of every kind's entry (see `cli/doctor.rs`).
#[track_caller]
fn assert_shape(report: &Value) {
    assert!(report["host"].is_string(), "{report:#}");
    assert!(report["ready"].is_boolean(), "{report:#}");
    for kind in report["kinds"].as_array().expect("kinds") {
        for key in ["declared", "driver", "hostReady", "ready"] {
            assert!(kind[key].is_boolean(), "{key} in {kind:#}");
        }
        let facilities = kind["facilities"].as_array().expect("facilities");
        assert!(!facilities.is_empty(), "{kind:#}");
        for facility in facilities {
            let status = facility["status"].as_str().expect("status");
            assert!(["ok", "warn", "missing"].contains(&status), "{facility:#}");
            assert!(facility["name"].is_string() && facility["detail"].is_string());
            assert_eq!(facility["fix"].is_null(), status == "ok", "{facility:#}");
        }
        let missing = facilities.iter().any(|f| f["status"] == "missing");
        assert_eq!(kind["hostReady"], !missing, "{kind:#}");
        assert_eq!(
            kind["ready"],
            kind["driver"].as_bool() == Some(true) && !missing,
            "{kind:#}"
        );
    }
}

#[test]
fn a_declared_kind_the_host_cannot_run_fails_and_says_so() {
    let Some(env) = TestEnv::new("doctor-nodriver") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("br.yaml", &bridge_manifest("br-doc", &[], "{}"));
    manifests.write("container.yaml", CONTAINER);

    let (outcome, report) = doctor_json(&env, &[manifests.path_str()]);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert_shape(&report);
    assert_eq!(kinds(&report), ["Bridge", "Container"], "{report:#}");
    assert_eq!(report["ready"], false);
    let container = &report["kinds"][1];
    assert_eq!(container["declared"], true);
    assert_eq!(container["driver"], true, "{report:#}");
    assert_eq!(container["hostReady"], false, "{report:#}");
    assert_eq!(report["kinds"][0]["ready"], true, "{report:#}");

    let text = env.gitvisor(["doctor", manifests.path_str()]);
    assert_eq!(text.code, Some(1), "{text}");
    assert!(text.stdout.contains("host lacks cgroups"), "{text}");
    assert!(
        text.stdout.contains("Cannot apply on this host: Container"),
        "{text}"
    );
}

#[test]
fn declared_bridges_on_a_capable_host_pass() {
    let Some(env) = TestEnv::new("doctor-bridge") else {
        return;
    };
    let manifests = env.quickstart();
    let (outcome, report) = doctor_json(&env, &[manifests.path_str()]);
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_shape(&report);
    assert_eq!(kinds(&report), ["Bridge"]);
    assert_eq!(report["ready"], true);
}

#[test]
fn without_a_path_every_kind_is_reported_and_nothing_fails() {
    let Some(env) = TestEnv::new("doctor-all") else {
        return;
    };
    let (outcome, report) = doctor_json(&env, &[]);
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_shape(&report);
    assert_eq!(
        kinds(&report),
        ["Bridge", "Volume", "Container", "VirtualMachine"]
    );
    assert!(report["path"].is_null());
    for kind in report["kinds"].as_array().expect("kinds") {
        assert_eq!(kind["declared"], false, "{kind:#}");
    }
}

#[test]
fn a_path_that_does_not_load_is_reported_and_fails() {
    let Some(env) = TestEnv::new("doctor-bad") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "bad.yaml",
        &bridge_manifest("br-bad", &[], "  mtu: 1500\n  colour: blue\n"),
    );
    let outcome = env.gitvisor(["doctor", manifests.path_str()]);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert!(outcome.stderr.contains("bad.yaml:7:"), "{outcome}");
    assert!(outcome.stdout.is_empty(), "{outcome}");
}
