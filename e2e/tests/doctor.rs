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

    // The cause is said, not a mount the host does not need.
    let cgroups = container["facilities"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["name"] == "cgroups"))
        .expect("a cgroups facility");
    let detail = cgroups["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("ip netns exec"), "{cgroups:#}");
    assert!(detail.contains(env.netns()), "{cgroups:#}");
    let fix = cgroups["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("nsenter --net="), "{cgroups:#}");
    assert!(!fix.contains("mount -t cgroup2"), "{cgroups:#}");

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
        [
            "Bridge",
            "NfsMount",
            "Volume",
            "Container",
            "VirtualMachine"
        ]
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

const VOLUME: &str = "apiVersion: gitvisor.dev/v1alpha1
kind: Volume
metadata:
  name: data
spec:
  volumeGroup: vg-doctor
  size: 64MiB
";

/// Whether the kernel has device-mapper, read here the way the kernel says it (its misc
/// and block device lists), independently of gitvisor.
fn kernel_has_device_mapper() -> bool {
    ["/proc/misc", "/proc/devices"].iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines()
                .any(|line| line.split_whitespace().nth(1) == Some("device-mapper"))
        })
    }) || std::path::Path::new("/sys/module/dm_mod").exists()
}

/// On a kernel without device-mapper (this CI host, whose `/dev/mapper/control` is a
/// node without a driver) doctor blocks Volumes and plan refuses the Volume with the
/// reason, instead of `lvcreate` failing in apply; with device-mapper it is a facility
/// like any other (the LVM guest test, `volumes.rs`, applies Volumes there).
#[test]
fn volumes_need_the_kernels_device_mapper_in_doctor_and_in_plan() {
    let Some(env) = TestEnv::new("doctor-dm") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("volume.yaml", VOLUME);
    let has = kernel_has_device_mapper();

    let (outcome, report) = doctor_json(&env, &[manifests.path_str()]);
    assert_shape(&report);
    assert_eq!(kinds(&report), ["Volume"], "{report:#}");
    let volume = &report["kinds"][0];
    let device_mapper = volume["facilities"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["name"] == "device-mapper"))
        .expect("a device-mapper facility");
    if has {
        assert_eq!(device_mapper["status"], "ok", "{report:#}");
        return;
    }
    assert_eq!(device_mapper["status"], "missing", "{report:#}");
    assert!(
        device_mapper["fix"]
            .as_str()
            .is_some_and(|fix| fix.contains("modprobe dm-mod")),
        "{report:#}"
    );
    assert_eq!(volume["hostReady"], false, "{report:#}");
    assert_eq!(outcome.code, Some(1), "{outcome}");

    if !std::path::Path::new("/usr/sbin/lvm").exists()
        && !std::path::Path::new("/sbin/lvm").exists()
    {
        eprintln!("skipping the plan half: lvm2 is not installed");
        return;
    }
    let plan = env.gitvisor(["plan", manifests.path_str()]);
    assert_ne!(plan.code, Some(0), "{plan}");
    assert!(plan.stdout.contains("? Volume/data"), "{plan}");
    assert!(
        plan.stdout
            .contains("cannot be created or resized on this host")
            && plan.stdout.contains("device-mapper"),
        "{plan}"
    );
}
