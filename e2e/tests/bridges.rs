//! Bridge lifecycle against the real kernel: create, in-place update, drift repair,
//! prune, conflict and adoption, and the "a lost store never deletes or takes over" rule. Each test
//! runs in its own network namespace (see the crate docs).

use std::collections::BTreeSet;

use gitvisor_e2e::{
    DeclaredBridge, Manifests, QUICKSTART_FILE, TestEnv, assert_contains, bridge_manifest, change,
    declared_bridges, field, non_noop_actions, status_states,
};
use serde_json::Value;

/// The declared bridge `name` of a revision.
#[track_caller]
fn declared(manifests: &Manifests, name: &str) -> DeclaredBridge {
    declared_bridges(manifests.path())
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("the revision declares no Bridge {name}"))
}

/// Every bridge the revision declares exists as declared (marker included), and nothing
/// else but `lo` is in the namespace.
#[track_caller]
fn assert_converged(env: &TestEnv, manifests: &Manifests) {
    let declared = declared_bridges(manifests.path());
    assert!(!declared.is_empty(), "the revision declares no bridges");
    for bridge in &declared {
        bridge.assert_realised_by(&env.expect_link(&bridge.name));
    }
    let names: BTreeSet<String> = declared.into_iter().map(|b| b.name).collect();
    assert_eq!(env.link_names(), names, "links in the namespace");
}

#[track_caller]
fn assert_plan_clean(env: &TestEnv, manifests: &Manifests) {
    let outcome = env.plan_detailed(manifests.path());
    if outcome.code != Some(0) {
        panic!("expected a clean plan (exit 0 with --detailed-exitcode)\n{outcome}");
    }
    let plan = env.plan_json(manifests.path());
    assert!(
        non_noop_actions(&plan).is_empty(),
        "plan still has changes: {:?}\n{plan:#}",
        non_noop_actions(&plan)
    );
}

fn field_mentions(field: &Value, side: &str, needle: &str) -> bool {
    field[side].to_string().contains(needle)
}

#[test]
fn create_from_quickstart() {
    let Some(env) = TestEnv::new("create") else {
        return;
    };
    let manifests = env.quickstart();

    let plan = env.plan_json(manifests.path());
    assert_eq!(
        change(&plan, "Bridge", "br-lab")["action"],
        "create",
        "{plan:#}"
    );
    assert_eq!(
        change(&plan, "Bridge", "br-svc")["action"],
        "create",
        "{plan:#}"
    );
    assert_eq!(env.link_names().len(), 0, "plan must not touch the host");

    env.apply(manifests.path()).expect_code(0);
    assert_converged(&env, &manifests);
    assert_plan_clean(&env, &manifests);

    let status = env.status_json();
    let states = status_states(&status);
    for name in ["br-lab", "br-svc"] {
        assert_eq!(
            states
                .get(&("Bridge".to_owned(), name.to_owned()))
                .map(String::as_str),
            Some("Ready"),
            "status of Bridge/{name}:\n{status:#}"
        );
    }

    // A second apply is a no-op that keeps the same links; its JSON report says so.
    let before = env.links();
    let report = env
        .gitvisor(["apply", manifests.path_str(), "--output", "json"])
        .expect_code(0)
        .json();
    assert_eq!(report["converged"], true, "{report:#}");
    assert!(
        non_noop_actions(&report["plan"]).is_empty(),
        "a second apply planned changes:\n{report:#}"
    );
    assert_eq!(before, env.links(), "a no-op apply changed the host");
}

#[test]
fn update_mtu_and_addresses_in_place() {
    let Some(env) = TestEnv::new("update") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    let before = env.expect_link("br-lab");
    assert_eq!(declared(&manifests, "br-lab").mtu, Some(1500));
    assert!(before.has_address("10.10.0.1/24"), "{before:?}");

    let edited = manifests
        .read(QUICKSTART_FILE)
        .replace("  mtu: 1500\n", "  mtu: 1400\n")
        .replace("- 10.10.0.1/24", "- 10.10.1.1/24");
    assert_ne!(
        edited,
        manifests.read(QUICKSTART_FILE),
        "the edit did not apply"
    );
    manifests.write(QUICKSTART_FILE, &edited);

    let plan = env.plan_json(manifests.path());
    let lab = change(&plan, "Bridge", "br-lab");
    assert_eq!(lab["action"], "update", "{plan:#}");
    let mtu = field(lab, "mtu").unwrap_or_else(|| panic!("no mtu field change:\n{plan:#}"));
    assert_eq!(mtu["old"], 1500, "{plan:#}");
    assert_eq!(mtu["new"], 1400, "{plan:#}");
    let addresses =
        field(lab, "addresses").unwrap_or_else(|| panic!("no addresses field change:\n{plan:#}"));
    assert!(field_mentions(addresses, "old", "10.10.0.1/24"), "{plan:#}");
    assert!(field_mentions(addresses, "new", "10.10.1.1/24"), "{plan:#}");
    assert!(
        !field_mentions(addresses, "new", "10.10.0.1/24"),
        "{plan:#}"
    );
    assert_eq!(
        change(&plan, "Bridge", "br-svc")["action"],
        "noop",
        "{plan:#}"
    );
    assert_eq!(
        env.expect_link("br-lab"),
        before,
        "plan must not touch the host"
    );

    env.apply(manifests.path()).expect_code(0);
    let after = env.expect_link("br-lab");
    assert_eq!(
        after.ifindex, before.ifindex,
        "br-lab was re-created, not updated in place"
    );
    assert_eq!(after.mtu, 1400, "{after:?}");
    assert!(after.has_address("10.10.1.1/24"), "{after:?}");
    assert!(!after.has_address("10.10.0.1/24"), "{after:?}");
    assert_converged(&env, &manifests);
    assert_plan_clean(&env, &manifests);
}

#[test]
fn out_of_band_drift_is_detected_and_repaired() {
    let Some(env) = TestEnv::new("drift") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    let lab_index = env.expect_link("br-lab").ifindex;

    // Someone changes things by hand.
    let svc_address = declared(&manifests, "br-svc").addresses[0].clone();
    env.ip(["addr", "del", &svc_address, "dev", "br-svc"]);
    env.ip(["link", "set", "br-lab", "down"]);
    assert!(!env.expect_link("br-lab").is_up());

    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(outcome.code, Some(2), "drift must be a change\n{outcome}");
    assert_contains(&outcome.stdout, "br-svc");
    assert_contains(&outcome.stdout, "br-lab");

    let plan = env.plan_json(manifests.path());
    let svc = change(&plan, "Bridge", "br-svc");
    assert_eq!(svc["action"], "update", "{plan:#}");
    let addresses = field(svc, "addresses").unwrap_or_else(|| panic!("{plan:#}"));
    assert!(field_mentions(addresses, "new", &svc_address), "{plan:#}");
    assert!(!field_mentions(addresses, "old", &svc_address), "{plan:#}");
    let lab = change(&plan, "Bridge", "br-lab");
    assert_eq!(lab["action"], "update", "{plan:#}");
    let up = field(lab, "up").unwrap_or_else(|| panic!("no `up` field change:\n{plan:#}"));
    assert_eq!(up["old"], false, "{plan:#}");
    assert_eq!(up["new"], true, "{plan:#}");

    env.apply(manifests.path()).expect_code(0);
    assert_converged(&env, &manifests);
    assert_eq!(
        env.expect_link("br-lab").ifindex,
        lab_index,
        "br-lab was re-created"
    );
    assert_plan_clean(&env, &manifests);
}

#[test]
fn prune_removes_only_undeclared_bridges() {
    let Some(env) = TestEnv::new("prune") else {
        return;
    };
    let manifests = Manifests::new();
    let quickstart = env.quickstart().read(QUICKSTART_FILE);
    let mut documents = quickstart.split("\n---\n");
    manifests.write("lab.yaml", documents.next().expect("first document"));
    manifests.write("svc.yaml", documents.next().expect("second document"));
    env.apply(manifests.path()).expect_code(0);
    assert_converged(&env, &manifests);
    let svc_index = env.expect_link("br-svc").ifindex;

    manifests.remove("lab.yaml");
    let plan = env.plan_json(manifests.path());
    assert_eq!(
        change(&plan, "Bridge", "br-lab")["action"],
        "delete",
        "{plan:#}"
    );
    assert_eq!(
        change(&plan, "Bridge", "br-svc")["action"],
        "noop",
        "{plan:#}"
    );
    assert!(env.link("br-lab").is_some(), "plan must not touch the host");

    env.apply(manifests.path()).expect_code(0);
    assert!(env.link("br-lab").is_none(), "br-lab was not pruned");
    assert_converged(&env, &manifests);
    assert_eq!(
        env.expect_link("br-svc").ifindex,
        svc_index,
        "br-svc was re-created"
    );
    assert_plan_clean(&env, &manifests);
    let states = status_states(&env.status_json());
    assert!(
        !states.contains_key(&("Bridge".to_owned(), "br-lab".to_owned())),
        "status still lists the pruned bridge: {states:?}"
    );
}

/// A lost store deletes nothing and takes nothing over: changing or deleting needs the
/// marker *and* the store record. Marked bridges without a record are conflicts until
/// the manifests adopt them.
#[test]
fn lost_store_never_deletes_or_takes_over() {
    let Some(mut env) = TestEnv::new("loststore") else {
        return;
    };
    let manifests = env.quickstart();
    env.apply(manifests.path()).expect_code(0);
    let lab_index = env.expect_link("br-lab").ifindex;

    // The store is gone, and br-lab is no longer declared: it carries the marker but
    // no store record, so it must stay.
    env.lose_state();
    let only_svc = Manifests::new();
    let quickstart = manifests.read(QUICKSTART_FILE);
    let svc = quickstart.split("\n---\n").nth(1).expect("second document");
    assert!(svc.contains("name: br-svc"), "{svc}");
    only_svc.write("svc.yaml", svc);
    // A conflict is a plan that cannot converge: exit 1.
    let plan = env
        .gitvisor([
            std::ffi::OsStr::new("plan"),
            only_svc.path().as_os_str(),
            std::ffi::OsStr::new("--output"),
            std::ffi::OsStr::new("json"),
        ])
        .expect_code(1)
        .json();
    let deletes: Vec<_> = non_noop_actions(&plan)
        .into_iter()
        .filter(|(_, action)| action == "delete")
        .collect();
    assert!(
        deletes.is_empty(),
        "a lost store planned deletes: {deletes:?}\n{plan:#}"
    );
    // br-svc is marked but unrecorded: not gitvisor's to change without adopting it.
    assert_eq!(
        change(&plan, "Bridge", "br-svc")["action"],
        "conflict",
        "{plan:#}"
    );

    let before = env.links();
    env.apply(only_svc.path()).expect_code(1);
    assert_eq!(
        env.links(),
        before,
        "apply with a lost store changed the host"
    );
    let lab = env.expect_link("br-lab");
    assert_eq!(lab.ifindex, lab_index, "br-lab was re-created");
    declared(&manifests, "br-lab").assert_realised_by(&lab);

    // Adopted, the marked bridges are gitvisor's again: recorded, and clean from then on.
    let adopted = quickstart.replace(
        "metadata:\n",
        "metadata:\n  annotations:\n    gitvisor.dev/adopt: \"true\"\n",
    );
    assert_eq!(
        adopted.matches("gitvisor.dev/adopt").count(),
        2,
        "{adopted}"
    );
    manifests.write(QUICKSTART_FILE, &adopted);
    env.apply(manifests.path()).expect_code(0);
    assert_eq!(env.expect_link("br-lab").ifindex, lab_index);
    manifests.write(QUICKSTART_FILE, &quickstart);
    assert_plan_clean(&env, &manifests);
}

#[test]
fn conflict_then_adopt() {
    let Some(env) = TestEnv::new("conflict") else {
        return;
    };
    env.ip(["link", "add", "br-lab", "type", "bridge"]);
    env.ip(["addr", "add", "10.10.0.99/24", "dev", "br-lab"]);
    let original = env.expect_link("br-lab");
    assert_eq!(original.alias, None);

    let manifests = env.quickstart();
    // A plan apply cannot converge exits 1 (docs/cli.md), and still prints the plan.
    let plan = env
        .gitvisor(["plan", manifests.path_str(), "--output", "json"])
        .expect_code(1)
        .json();
    let lab = change(&plan, "Bridge", "br-lab");
    assert_eq!(lab["action"], "conflict", "{plan:#}");
    assert!(
        lab["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a conflict must say why:\n{plan:#}"
    );
    assert_eq!(
        change(&plan, "Bridge", "br-svc")["action"],
        "create",
        "{plan:#}"
    );
    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(
        outcome.code,
        Some(1),
        "a conflict is not a change apply can make\n{outcome}"
    );

    let outcome = env.apply(manifests.path());
    assert_eq!(
        outcome.code,
        Some(1),
        "a conflict means not converged\n{outcome}"
    );
    assert_eq!(
        env.expect_link("br-lab"),
        original,
        "gitvisor touched a bridge it does not own\n{outcome}"
    );
    // The rest of the revision still proceeds.
    let svc = env.expect_link("br-svc");
    assert!(svc.is_marked(), "{svc:?}");
    let states = status_states(&env.status_json());
    assert_ne!(
        states
            .get(&("Bridge".to_owned(), "br-lab".to_owned()))
            .map(String::as_str),
        Some("Ready"),
        "a conflicting bridge is not Ready: {states:?}"
    );

    // Opt in to adoption.
    let adopted = manifests.read(QUICKSTART_FILE).replacen(
        "  labels: {role: lab}\n",
        "  labels: {role: lab}\n  annotations:\n    gitvisor.dev/adopt: \"true\"\n",
        1,
    );
    assert_ne!(
        adopted,
        manifests.read(QUICKSTART_FILE),
        "the edit did not apply"
    );
    manifests.write(QUICKSTART_FILE, &adopted);
    let plan = env.plan_json(manifests.path());
    assert_eq!(
        change(&plan, "Bridge", "br-lab")["action"],
        "update",
        "{plan:#}"
    );

    env.apply(manifests.path()).expect_code(0);
    let lab = env.expect_link("br-lab");
    assert_eq!(
        lab.ifindex, original.ifindex,
        "adoption must not re-create the bridge"
    );
    assert!(!lab.has_address("10.10.0.99/24"), "{lab:?}");
    assert_converged(&env, &manifests);
    assert_plan_clean(&env, &manifests);
}

/// `vlanFiltering: true` where the kernel may not support it. Where it does, the bridge
/// gets it; where it does not (no `CONFIG_BRIDGE_VLAN_FILTERING`, as on the CI machine),
/// apply must fail for that bridge alone, say which, leave no half-made bridge behind,
/// record it as Failed, and still converge the rest of the revision.
#[test]
fn vlan_filtering_matches_kernel_support() {
    let Some(env) = TestEnv::new("vlan") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "vlan.yaml",
        &bridge_manifest(
            "br-vlan",
            &[],
            "  addresses: [10.40.0.1/24]\n  vlanFiltering: true\n",
        ),
    );
    manifests.write(
        "plain.yaml",
        &bridge_manifest("br-plain", &[], "  addresses: [10.41.0.1/24]\n"),
    );
    let outcome = env.apply(manifests.path());
    if env.kernel_supports_vlan_filtering() {
        assert_eq!(outcome.code, Some(0), "{outcome}");
        assert_converged(&env, &manifests);
        return;
    }
    assert_eq!(
        outcome.code,
        Some(1),
        "the kernel cannot filter VLANs, so the revision cannot converge\n{outcome}"
    );
    let report = format!("{}{}", outcome.stdout, outcome.stderr);
    assert_contains(&report, "br-vlan");
    assert!(
        env.link("br-vlan").is_none(),
        "a half-configured br-vlan was left behind: {:?}",
        env.link("br-vlan")
    );
    declared(&manifests, "br-plain").assert_realised_by(&env.expect_link("br-plain"));
    let states = status_states(&env.status_json());
    assert_eq!(
        states
            .get(&("Bridge".to_owned(), "br-vlan".to_owned()))
            .map(String::as_str),
        Some("Failed"),
        "{states:?}"
    );
}

#[test]
fn a_declared_port_that_is_down_is_brought_up_and_kept_up() {
    let Some(env) = TestEnv::new("port-up") else {
        return;
    };
    // A veth is down when made, as a fresh NIC is; its far end (gv1) is up.
    env.ip(["link", "add", "gv0", "type", "veth", "peer", "name", "gv1"]);
    env.ip(["link", "set", "gv1", "up"]);
    assert!(!env.expect_link("gv0").is_up());
    let manifests = Manifests::new();
    manifests.write("br0.yaml", &bridge_manifest("br0", &[], "  ports: [gv0]\n"));

    env.apply(manifests.path()).expect_code(0);
    let port = env.expect_link("gv0");
    assert_eq!(port.master.as_deref(), Some("br0"));
    assert!(port.is_up(), "the declared port was left down: {port:?}");
    let bridge = env.expect_link("br0");
    assert!(
        bridge.flags.iter().any(|f| f == "LOWER_UP"),
        "the bridge has no carrier: {bridge:?}"
    );
    assert_plan_clean(&env, &manifests);

    // Set down by hand: drift, shown per port and repaired in place.
    env.ip(["link", "set", "gv0", "down"]);
    let plan = env.plan_json(manifests.path());
    let br0 = change(&plan, "Bridge", "br0");
    assert_eq!(br0["action"], "update", "{plan:#}");
    let up = field(br0, "ports.gv0.up").unwrap_or_else(|| panic!("no ports.gv0.up:\n{plan:#}"));
    assert_eq!(
        (&up["old"], &up["new"]),
        (&false.into(), &true.into()),
        "{plan:#}"
    );
    env.apply(manifests.path()).expect_code(0);
    assert!(env.expect_link("gv0").is_up());
    assert_plan_clean(&env, &manifests);
}
