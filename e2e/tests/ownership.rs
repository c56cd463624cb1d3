//! Ownership against the real kernel: gitvisor changes or deletes a bridge only when it
//! carries the marker *and* the state store records it.
//!
//! - A bridge gitvisor made, deleted by hand and made again by hand under the same name,
//!   is a conflict when declared and is not pruned when not.
//! - A state store copied from another host deletes none of this host's hand-made
//!   bridges that happen to have the recorded names.
//! - A bridge is created under a temporary name, marked, then renamed: `apply` killed
//!   while temporary links exist leaves nothing under a declared name without the marker,
//!   and the next `apply` removes the leftovers and converges.

use std::collections::BTreeSet;
use std::path::Path;

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, change, non_noop_actions, nth_address};
use serde_json::Value;

/// What gitvisor creates bridges under before renaming them (`TEMPORARY_PREFIX`).
const TEMPORARY_PREFIX: &str = "gv_";

/// `plan PATH --output json` whatever its exit code (a plan with a conflict may exit 1):
/// the parsed plan. Panics when stdout is not a plan.
#[track_caller]
fn plan_json(env: &TestEnv, path: &Path) -> Value {
    let outcome = env.gitvisor([
        std::ffi::OsStr::new("plan"),
        path.as_os_str(),
        std::ffi::OsStr::new("--output"),
        std::ffi::OsStr::new("json"),
    ]);
    assert!(
        matches!(outcome.code, Some(0 | 1)),
        "plan failed to run\n{outcome}"
    );
    let plan = outcome.json();
    assert!(plan["changes"].is_array(), "not a plan\n{outcome}");
    plan
}

fn deletes(plan: &Value) -> Vec<(String, String)> {
    non_noop_actions(plan)
        .into_iter()
        .filter(|(_, action)| action == "delete")
        .collect()
}

/// The exact reproduction: apply br-x; `ip link del br-x`; `ip link add br-x type
/// bridge`. The plan shows a conflict (not an update that sets the marker), apply leaves
/// it alone, and once br-x is no longer declared nothing prunes it.
#[test]
fn a_bridge_made_again_by_hand_is_a_conflict_and_never_pruned() {
    let Some(env) = TestEnv::new("handmade") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "x.yaml",
        &bridge_manifest("br-x", &[], "  addresses: [10.60.0.1/24]\n"),
    );
    manifests.write(
        "y.yaml",
        &bridge_manifest("br-y", &[], "  addresses: [10.61.0.1/24]\n"),
    );
    env.apply(manifests.path()).expect_code(0);
    assert!(env.expect_link("br-x").is_marked());

    env.ip(["link", "del", "br-x"]);
    env.ip(["link", "add", "br-x", "type", "bridge"]);
    let theirs = env.expect_link("br-x");
    assert_eq!(theirs.alias, None);

    let plan = plan_json(&env, manifests.path());
    let x = change(&plan, "Bridge", "br-x");
    assert_eq!(x["action"], "conflict", "{plan:#}");
    assert!(
        x["fields"].as_array().is_none_or(Vec::is_empty),
        "a conflict lists no field changes:\n{plan:#}"
    );
    let outcome = env.apply(manifests.path());
    assert_eq!(
        outcome.code,
        Some(1),
        "a conflict is not converged\n{outcome}"
    );
    assert_eq!(
        env.expect_link("br-x"),
        theirs,
        "apply touched br-x\n{outcome}"
    );

    manifests.remove("x.yaml");
    let plan = plan_json(&env, manifests.path());
    assert_eq!(deletes(&plan), Vec::<(String, String)>::new(), "{plan:#}");
    env.apply(manifests.path()).expect_code(0);
    assert_eq!(env.expect_link("br-x"), theirs, "prune deleted br-x");
}

/// A `state.redb` copied from a host where gitvisor made br-a and br-b: on this host
/// br-a and br-b were made by hand. Nothing is deleted or taken over.
#[test]
fn a_store_copied_from_another_host_deletes_nothing() {
    let Some(origin) = TestEnv::new("store-origin") else {
        return;
    };
    let Some(here) = TestEnv::new("store-copy") else {
        return;
    };
    let manifests = Manifests::new();
    for (i, name) in ["br-a", "br-b"].iter().enumerate() {
        manifests.write(
            &format!("{name}.yaml"),
            &bridge_manifest(name, &[], &format!("  addresses: [{}]\n", nth_address(i))),
        );
    }
    origin.apply(manifests.path()).expect_code(0);
    let mut copied = 0;
    for entry in std::fs::read_dir(origin.state_dir()).expect("read the origin's state dir") {
        let entry = entry.expect("state dir entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), here.state_dir().join(entry.file_name()))
                .expect("copy the store");
            copied += 1;
        }
    }
    assert!(copied > 0, "the origin's state dir is empty");

    for name in ["br-a", "br-b"] {
        here.ip(["link", "add", name, "type", "bridge"]);
    }
    let before = here.links();

    // Only br-c declared: br-a and br-b are recorded and undeclared, but not marked.
    let other = Manifests::new();
    other.write("c.yaml", &bridge_manifest("br-c", &[], "{}"));
    let plan_c = plan_json(&here, other.path());
    assert_eq!(
        deletes(&plan_c),
        Vec::<(String, String)>::new(),
        "{plan_c:#}"
    );
    for prune in [false, true] {
        let mut args = vec!["apply", other.path_str()];
        if prune && help_mentions(&here, "--prune") {
            args.push("--prune");
        }
        here.gitvisor(args).expect_code(0);
        for link in &before {
            assert_eq!(
                here.link(&link.name).as_ref(),
                Some(link),
                "{} was changed or deleted",
                link.name
            );
        }
    }

    // Declared, they are conflicts: the record alone is no licence to take them over.
    let plan_ab = plan_json(&here, manifests.path());
    for name in ["br-a", "br-b"] {
        assert_eq!(
            change(&plan_ab, "Bridge", name)["action"],
            "conflict",
            "{plan_ab:#}"
        );
    }
}

/// Whether `gitvisor apply --help` lists `flag` (the prune opt-in comes with another
/// change; without it, plain `apply` is the strongest prune there is).
fn help_mentions(env: &TestEnv, flag: &str) -> bool {
    let outcome = env.gitvisor(["apply", "--help"]);
    outcome.stdout.contains(flag)
}

/// `apply` is SIGKILLed as soon as a temporary link appears, and again after some
/// bridges exist: no declared name is ever held by an unmarked link, and the next
/// `apply` removes every leftover and converges exactly.
#[test]
fn sigkill_while_bridges_have_temporary_names_is_repaired() {
    let Some(env) = TestEnv::new("tempname") else {
        return;
    };
    const COUNT: usize = 100;
    let manifests = Manifests::new();
    let mut declared = BTreeSet::new();
    for i in 0..COUNT {
        let name = format!("gvt{i}");
        manifests.write(
            &format!("{name}.yaml"),
            &bridge_manifest(&name, &[], &format!("  addresses: [{}]\n", nth_address(i))),
        );
        declared.insert(name);
    }

    for kill_after_temporaries in [1, 20] {
        let (killed, temporaries) = env.apply_killed_after_links(
            manifests.path_str(),
            TEMPORARY_PREFIX,
            kill_after_temporaries,
        );
        if !killed {
            // Everything was created before the kill: nothing left to exercise.
            assert!(
                kill_after_temporaries > 1,
                "apply finished before the first temporary link was seen"
            );
            break;
        }

        let links = env.links();
        for link in &links {
            if declared.contains(&link.name) {
                assert!(
                    link.is_marked(),
                    "a declared name is held by an unmarked link: {link:?}"
                );
            }
        }
        let leftovers = links
            .iter()
            .filter(|l| l.name.starts_with(TEMPORARY_PREFIX))
            .count();
        eprintln!(
            "killed after {} temporary links: {} links, {leftovers} under a temporary name",
            temporaries.len(),
            links.len()
        );
    }

    env.apply(manifests.path()).expect_code(0);
    let names = env.link_names();
    assert_eq!(names, declared, "links after repair");
    for link in env.links().iter().filter(|l| l.name != "lo") {
        assert!(link.is_marked() && link.is_up(), "{link:?}");
    }
    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(
        outcome.code,
        Some(0),
        "plan after repair is not clean\n{outcome}"
    );
}
