//! No bytes in the state store crash a command, and a damaged store never leads to a
//! delete (issue 5 item 2).
//!
//! A real store (6 bridges applied) is damaged in many ways: 8 bytes overwritten at
//! offset 4096 (the issue's reproduction), 8 bytes inverted at every 4 KiB page, cut
//! short, replaced by garbage. On each copy the real binary runs `status` (text and
//! JSON), `plan` (text and JSON) and `apply` of a revision that drops 3 of the 6
//! bridges, which a healthy store would prune. Every command must exit without a panic
//! (exit code 101, "panicked" on stderr); `plan` must show the changes the `apply` then
//! makes; and when the store was damaged, it is reported by name, moved aside (private),
//! and the 3 bridges gitvisor made are still there after the apply.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use gitvisor_e2e::{Manifests, Outcome, TestEnv, bridge_manifest};
use serde_json::Value;

const PREFIX: &str = "gvd";
const DECLARED: usize = 6;
/// The second revision keeps only the first three.
const KEPT: usize = 3;

fn declare(manifests: &Manifests, count: usize) {
    for i in 0..DECLARED {
        let file = format!("{PREFIX}{i}.yaml");
        if i < count {
            manifests.write(
                &file,
                &bridge_manifest(&format!("{PREFIX}{i}"), &[], "  mtu: 1400\n"),
            );
        } else if manifests.path().join(&file).exists() {
            manifests.remove(&file);
        }
    }
}

#[track_caller]
fn assert_no_panic(what: &str, outcome: &Outcome) {
    assert!(
        outcome.code.is_some() && outcome.code != Some(101),
        "{what}: crashed\n{outcome}"
    );
    assert!(
        !outcome.stderr.contains("panicked"),
        "{what}: panicked\n{outcome}"
    );
}

fn changes(plan: &Value) -> BTreeMap<String, Value> {
    plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (format!("{}/{}", c["kind"], c["name"]), c.clone()))
        .collect()
}

fn damaged_copies(good: &[u8]) -> Vec<(String, Vec<u8>, bool)> {
    // (what, bytes, whether the damage is certain to hit data in use)
    let mut copies = Vec::new();
    let mut issue = good.to_vec();
    issue[4096..4104].copy_from_slice(b"DAMAGED!");
    copies.push(("8 bytes written at 4096".to_owned(), issue, true));
    for page in (0..good.len()).step_by(4096).skip(2) {
        for offset in [page + 64, page + 2048] {
            let mut bytes = good.to_vec();
            bytes[offset..offset + 8].iter_mut().for_each(|b| *b = !*b);
            copies.push((format!("8 bytes inverted at {offset}"), bytes, false));
        }
    }
    copies.push((
        "cut to half".to_owned(),
        good[..good.len() / 2].to_vec(),
        true,
    ));
    copies.push(("cut to 100 bytes".to_owned(), good[..100].to_vec(), true));
    copies.push((
        "garbage".to_owned(),
        (0..good.len()).map(|i| (i * 31 % 251) as u8).collect(),
        true,
    ));
    copies
}

#[test]
fn no_damaged_store_crashes_a_command_or_leads_to_a_delete() {
    let Some(env) = TestEnv::new("store-damage") else {
        return;
    };
    let manifests = Manifests::new();
    let store = env.state_dir().join("state.redb");
    declare(&manifests, DECLARED);
    env.apply(manifests.path()).expect_code(0);
    let good = std::fs::read(&store).expect("read the store");
    assert!(good.len() > 3 * 4096, "store of {} bytes", good.len());

    let copies = damaged_copies(&good);
    let total = copies.len();
    let mut detected = 0;
    for (what, bytes, certain) in copies {
        // Back to six bridges, owned per the healthy store, then damage it.
        declare(&manifests, DECLARED);
        std::fs::write(&store, &good).expect("restore the store");
        env.apply(manifests.path()).expect_code(0);
        for entry in std::fs::read_dir(env.state_dir()).expect("state dir") {
            let path = entry.expect("entry").path();
            if path != store {
                std::fs::remove_file(&path).expect("remove an old copy moved aside");
            }
        }
        std::fs::write(&store, &bytes).expect("damage the store");
        declare(&manifests, KEPT);

        let status = env.gitvisor(["status"]);
        assert_no_panic(&format!("{what}: status"), &status);
        let status_json = env.gitvisor(["status", "--output", "json"]);
        assert_no_panic(&format!("{what}: status --output json"), &status_json);
        let plan_text = env.gitvisor(["plan", manifests.path_str()]);
        assert_no_panic(&format!("{what}: plan"), &plan_text);
        let plan = env.gitvisor(["plan", manifests.path_str(), "--output", "json"]);
        assert_no_panic(&format!("{what}: plan --output json"), &plan);
        assert_eq!(
            std::fs::read(&store).expect("read"),
            bytes,
            "{what}: a read-only command wrote the store"
        );
        let apply = env.gitvisor(["apply", manifests.path_str(), "--output", "json"]);
        assert_no_panic(&format!("{what}: apply"), &apply);

        assert_eq!(
            changes(&plan.json()),
            changes(&apply.json()["plan"]),
            "{what}: plan and apply differ\n{plan}\n{apply}"
        );
        let damaged = plan.stderr.contains("damaged");
        assert!(
            damaged || !certain,
            "{what}: the damage was not reported\n{plan}"
        );
        if !damaged {
            continue;
        }
        detected += 1;
        let store_name = store.display().to_string();
        for outcome in [&status, &plan_text, &plan, &apply] {
            assert!(
                outcome.stderr.contains(&store_name),
                "{what}: the warning does not name the store\n{outcome}"
            );
        }
        assert!(
            status.stdout.contains("State store damaged") && status.stdout.contains(&store_name),
            "{what}: status does not say the store is damaged\n{status}"
        );
        let shown = status_json.json()["storeDamage"]
            .as_str()
            .map(str::to_owned);
        assert!(
            shown.is_some_and(|why| why.contains(&store_name)),
            "{what}: status --output json has no storeDamage\n{status_json}"
        );
        let names = env.link_names();
        for i in KEPT..DECLARED {
            assert!(
                names.contains(&format!("{PREFIX}{i}")),
                "{what}: apply with a damaged store deleted {PREFIX}{i}\n{apply}"
            );
        }
        let aside: Vec<_> = std::fs::read_dir(env.state_dir())
            .expect("state dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: {aside:?}\n{apply}");
        let mode = std::fs::metadata(&aside[0])
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{what}: the damaged copy is not private"
        );
    }
    eprintln!(
        "{detected} of {total} damaged copies of a {} byte store were detected",
        good.len()
    );
    assert!(
        detected >= 4,
        "only {detected} damaged stores were detected"
    );
}
