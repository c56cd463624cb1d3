//! Rejected revisions: one good Bridge manifest plus one bad file. `validate` must exit 1
//! and point at the bad file's line (`file:line:col`), and `plan`/`apply` must exit 1
//! without changing anything: a revision is accepted or rejected whole (DESIGN §1.2).

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest};

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
