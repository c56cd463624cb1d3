//! Rejected revisions: one good Bridge manifest plus one bad file. `validate` must exit 1
//! and point at the bad file's line (`file:line:col`), and `plan`/`apply` must exit 1
//! without changing anything: a revision is accepted or rejected whole.

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, gitvisor_offline};

/// The good half of every bad revision.
fn good_bridge() -> String {
    bridge_manifest("br-good", &[], "  mtu: 1500\n  addresses: [10.30.0.1/24]\n")
}

/// A bad file and the 1-based lines an error may point at (more than one where the
/// error can honestly be reported at either place, e.g. either end of a cycle).
struct Bad {
    file: &'static str,
    content: &'static str,
    lines: &'static [usize],
    /// Something the message must mention.
    mentions: &'static str,
}

fn check_rejected(test: &str, bad: &Bad) {
    let Some(env) = TestEnv::new(test) else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("good.yaml", &good_bridge());
    let bad_path = manifests.write(bad.file, bad.content);
    let before = env.links();

    // validate: exit 1, file:line:col of the bad file.
    let outcome = env.gitvisor(["validate", manifests.path_str()]);
    assert_eq!(
        outcome.code,
        Some(1),
        "validate must reject the revision\n{outcome}"
    );
    let located: Vec<(usize, usize)> = outcome
        .stderr
        .lines()
        .filter_map(|line| location(line, bad.file))
        .collect();
    assert!(
        !located.is_empty(),
        "no `{}:line:col` diagnostic on stderr\n{outcome}",
        bad.file
    );
    assert!(
        located.iter().any(|(line, _)| bad.lines.contains(line)),
        "diagnostic points at line(s) {:?} of {}, expected one of {:?}\n{outcome}",
        located.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        bad.file,
        bad.lines
    );
    assert!(
        outcome.stderr.contains(bad.mentions),
        "the message should mention {:?}\n{outcome}",
        bad.mentions
    );
    assert!(
        !outcome.stderr.contains("good.yaml:"),
        "the good file was blamed\n{outcome}"
    );
    assert!(bad_path.exists());

    // plan and apply: exit 1, nothing changed.
    let outcome = env.gitvisor(["plan", manifests.path_str(), "--detailed-exitcode"]);
    assert_eq!(
        outcome.code,
        Some(1),
        "plan must fail on a rejected revision\n{outcome}"
    );
    let outcome = env.gitvisor(["apply", manifests.path_str()]);
    assert_eq!(
        outcome.code,
        Some(1),
        "apply must fail on a rejected revision\n{outcome}"
    );
    assert!(
        outcome.stderr.contains(bad.file),
        "apply should report the bad file\n{outcome}"
    );
    assert_eq!(
        env.links(),
        before,
        "a rejected revision changed the host (the good bridge must not be created either)\n{outcome}"
    );
    assert!(env.link("br-good").is_none());

    // Without the bad file the same revision is fine, so the rejection was not about
    // the good half.
    manifests.remove(bad.file);
    env.gitvisor(["validate", manifests.path_str()])
        .expect_code(0);
}

/// Parses `...<file>:LINE:COL: ...` out of a diagnostic line.
fn location(line: &str, file: &str) -> Option<(usize, usize)> {
    let start = line.find(&format!("{file}:"))? + file.len() + 1;
    let mut parts = line[start..].splitn(3, ':');
    let line_no = parts.next()?.trim().parse().ok()?;
    let col = parts.next()?.trim().parse().ok()?;
    Some((line_no, col))
}

#[test]
fn rejects_yaml_syntax_error() {
    check_rejected(
        "yaml",
        &Bad {
            file: "syntax.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-syntax
spec:
  mtu: 1500
  stp: false: true
",
            lines: &[7],
            // The wording is the YAML parser's; only the place is part of the contract.
            mentions: "",
        },
    );
}

#[test]
fn rejects_unknown_field() {
    check_rejected(
        "unknown",
        &Bad {
            file: "typo.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-typo
spec:
  addresses: [10.31.0.1/24]
  mtuu: 9000
",
            lines: &[7],
            mentions: "mtuu",
        },
    );
}

#[test]
fn rejects_dangling_vm_network() {
    check_rejected(
        "dangling-vm",
        &Bad {
            file: "vm.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: vm-dangling
spec:
  memory: 512MiB
  boot:
    firmware: bios
  networks:
    - bridge: nope
",
            lines: &[10],
            mentions: "nope",
        },
    );
}

#[test]
fn rejects_dangling_depends_on() {
    check_rejected(
        "dangling-dep",
        &Bad {
            file: "dep.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-dep
  dependsOn:
    - Bridge/nope
spec:
  addresses: [10.32.0.1/24]
",
            lines: &[6],
            mentions: "Bridge/nope",
        },
    );
}

#[test]
fn rejects_dependency_cycle() {
    check_rejected(
        "cycle",
        &Bad {
            file: "cycle.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-a
  dependsOn: [Bridge/br-b]
spec:
  addresses: [10.33.0.1/24]
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-b
  dependsOn: [Bridge/br-a]
spec:
  addresses: [10.34.0.1/24]
",
            lines: &[5, 13],
            mentions: "cycle",
        },
    );
}

#[test]
fn rejects_one_port_on_two_bridges() {
    check_rejected(
        "port-twice",
        &Bad {
            file: "ports.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-p1
spec:
  ports: [gv-dummy0]
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-p2
spec:
  ports:
    - gv-dummy0
",
            lines: &[14],
            mentions: "ports.yaml:6:11",
        },
    );
}

#[test]
fn rejects_an_address_the_kernel_would_merge() {
    check_rejected(
        "merged-address",
        &Bad {
            file: "merge.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-merge
spec:
  addresses:
    - fd00:35::1/64
    - fd00:35::1/48
",
            lines: &[8],
            mentions: "one prefix length",
        },
    );
}

#[test]
fn rejects_a_multicast_address() {
    check_rejected(
        "multicast",
        &Bad {
            file: "mcast.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-mcast
spec:
  addresses: [224.0.0.1/24]
",
            lines: &[6],
            mentions: "multicast",
        },
    );
}

#[test]
fn rejects_a_name_the_kernel_reserves() {
    check_rejected(
        "reserved-name",
        &Bad {
            file: "all.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: all
spec: {}
",
            lines: &[4],
            mentions: "reserves",
        },
    );
}

#[test]
fn rejects_loopback_and_bridges_as_ports() {
    check_rejected(
        "bad-ports",
        &Bad {
            file: "lo.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-lo
spec:
  ports: [lo, br-inner]
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-inner
spec: {}
",
            lines: &[6],
            mentions: "cannot enslave a bridge to a bridge",
        },
    );
}

#[test]
fn rejects_an_adopt_annotation_that_is_not_a_bool() {
    check_rejected(
        "adopt-yes",
        &Bad {
            file: "adopt.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-adopt
  annotations:
    gitvisor.dev/adopt: \"yes\"
spec: {}
",
            lines: &[6],
            mentions: "must be \"true\" or \"false\"",
        },
    );
}

#[test]
fn rejects_an_address_with_leading_zeros() {
    check_rejected(
        "leading-zero",
        &Bad {
            file: "zero.yaml",
            content: "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-zero
spec:
  addresses: [010.36.0.1/24]
",
            lines: &[6],
            mentions: "leading zero",
        },
    );
}

/// Every error of a document is reported, and a broken document's name stays declared:
/// a typo in a bridge does not turn a reference to it into "not declared".
#[test]
fn validate_reports_every_error_without_cascades() {
    let manifests = Manifests::new();
    manifests.write("good.yaml", &good_bridge());
    manifests.write(
        "lan.yaml",
        "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br-lan
spec:
  stpp: true
  mtu: jumbo
  vlanFilter: true
",
    );
    manifests.write(
        "vm.yaml",
        "\
apiVersion: gitvisor.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: vm-lan
spec:
  memory: 512MiB
  boot: {firmware: bios}
  networks: [{bridge: br-lan}]
",
    );
    let outcome = gitvisor_offline(["validate", manifests.path_str()]);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    for expected in [
        "lan.yaml:6:3: spec.stpp: unknown field `stpp`",
        "lan.yaml:7:8: spec.mtu: invalid type: string \"jumbo\"",
        "lan.yaml:8:3: spec.vlanFilter: unknown field `vlanFilter`",
    ] {
        assert!(
            outcome.stderr.contains(expected),
            "missing {expected:?}\n{outcome}"
        );
    }
    assert!(!outcome.stderr.contains("not declared"), "{outcome}");
    assert!(!outcome.stderr.contains("vm.yaml"), "{outcome}");
}

/// Runs `validate` with a deadline, so that a loader that blocks fails the test instead
/// of hanging the suite.
fn validate_within_a_minute(path: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(gitvisor_e2e::gitvisor_bin())
        .args(["--host", "e2e-host", "validate"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gitvisor starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait for gitvisor") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
            }
            return (status.code(), stderr);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gitvisor validate {} did not finish: it blocked",
                path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_or_a_symlink_out_of_the_tree_is_an_error_not_a_hang() {
    let manifests = Manifests::new();
    manifests.write("good.yaml", &good_bridge());
    let fifo = manifests.path().join("x.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::os::unix::fs::symlink("/usr/share", manifests.path().join("share")).expect("symlink");
    let (code, stderr) = validate_within_a_minute(manifests.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("x.yaml:1:1: is a FIFO"), "{stderr}");
    assert!(
        stderr.contains("share:1:1: is a symlink to /usr/share, outside the manifest tree"),
        "{stderr}"
    );
    assert!(!stderr.contains("good.yaml"), "{stderr}");
}
