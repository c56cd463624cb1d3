//! Crash safety (DESIGN §1.8: "each step is idempotent so a crash at any point is repaired
//! by the next run"): `apply` of many bridges is killed with SIGKILL part-way through
//! (200 bridges with ~60 made; and 30 with the first one just made), and the next
//! `apply` must converge to exactly the declared state — no duplicates, no
//! leftovers, no bridge without its marker — and a plan after that must be clean.
//!
//!
//! After an interrupted apply, the read-only commands must tell the truth about it
//! (issue 5 item 1): `plan` shows exactly the changes the next `apply` makes, change by
//! change, and `status` shows the last recorded revision, at every kill point of an apply
//! that deletes, updates and creates 300 bridges, for SIGKILL and SIGTERM.
//!
//! The kill is timed from the kernel's side: `ip monitor link` streams link events while
//! gitvisor runs, and the process is killed once enough `gvk*` links (or link events)
//! have been seen. That does not depend on how fast this machine is.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, nth_address, status_states};
use serde_json::Value;

const PREFIX: &str = "gvk";

/// Makes sure the monitor is subscribed before gitvisor starts: creates a probe link
/// and pokes it (up, down, up, …: each flag change is an `RTM_NEWLINK` event, unlike an
/// alias change on a down link) until the monitor reports it — the monitor may subscribe after the first event — then deletes
/// it again.
fn sync_monitor(env: &TestEnv, events: &Receiver<String>) {
    const PROBE: &str = "gv-sync";
    env.ip(["link", "add", PROBE, "type", "bridge"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut poke = 0;
    'wait: loop {
        assert!(
            Instant::now() < deadline,
            "`ip monitor link` never reported {PROBE}"
        );
        loop {
            match events.recv_timeout(Duration::from_millis(50)) {
                Ok(seen) if seen == PROBE => break 'wait,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` exited"),
            }
        }
        poke += 1;
        env.ip([
            "link",
            "set",
            PROBE,
            if poke % 2 == 1 { "up" } else { "down" },
        ]);
    }
    env.ip(["link", "del", PROBE]);
}

/// Declares `count` bridges, SIGKILLs `apply` once `kill_at` of them have appeared in
/// the kernel, then checks that the next `apply` converges exactly.
fn crash_and_repair(test: &str, count: usize, kill_at: usize) {
    let Some(env) = TestEnv::new(test) else {
        return;
    };
    let manifests = Manifests::new();
    for i in 0..count {
        let name = format!("{PREFIX}{i}");
        manifests.write(
            &format!("{name}.yaml"),
            &bridge_manifest(&name, &[], &format!("  addresses: [{}]\n", nth_address(i))),
        );
    }
    env.gitvisor(["validate", manifests.path_str()])
        .expect_code(0);

    // Start the monitor and make sure it is subscribed.
    let (mut monitor, events) = env.monitor_links();
    sync_monitor(&env, &events);

    let mut child = env
        .gitvisor_command(["apply", manifests.path_str()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cannot start gitvisor apply");
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let killed = loop {
        match events.recv_timeout(Duration::from_millis(2)) {
            Ok(name) if name.starts_with(PREFIX) => {
                seen.insert(name);
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` stopped"),
        }
        if seen.len() >= kill_at {
            // Child::kill is SIGKILL; `ip netns exec` execs gitvisor in place, so this
            // is gitvisor's own pid.
            child.kill().expect("cannot SIGKILL gitvisor");
            let _ = child.wait();
            break true;
        }
        if let Some(status) = child.try_wait().expect("cannot wait for gitvisor") {
            eprintln!("apply finished ({status}) before {kill_at} bridges were seen");
            break false;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "apply made no progress: {} bridges after 90 s",
            seen.len()
        );
    };
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(
        killed,
        "apply of {count} bridges completed before the test could kill it part-way; \
         the crash was not exercised (saw {} bridges)",
        seen.len()
    );

    let halfway: Vec<_> = env
        .links()
        .into_iter()
        .filter(|l| l.name.starts_with(PREFIX))
        .collect();
    let marked = halfway.iter().filter(|l| l.is_marked()).count();
    let addressed = halfway.iter().filter(|l| !l.addresses.is_empty()).count();
    eprintln!(
        "killed after {:?}: {} of {count} bridges exist, {marked} marked, {addressed} with an address",
        started.elapsed(),
        halfway.len()
    );

    // The next run repairs everything.
    env.apply(manifests.path()).expect_code(0);

    let links = env.links();
    let mut names = BTreeSet::new();
    for link in &links {
        if link.name == "lo" {
            continue;
        }
        assert!(
            names.insert(link.name.clone()),
            "duplicate link name {}",
            link.name
        );
        let Some(i) = link
            .name
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < count)
        else {
            panic!("leftover link that was never declared: {link:?}");
        };
        assert!(link.is_bridge(), "{link:?}");
        assert!(link.is_marked(), "bridge without the marker: {link:?}");
        assert!(link.is_up(), "bridge left down: {link:?}");
        assert_eq!(
            link.addresses,
            vec![nth_address(i)],
            "wrong addresses on {}",
            link.name
        );
    }
    assert_eq!(names.len(), count, "expected exactly {count} bridges");

    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(
        outcome.code,
        Some(0),
        "plan after repair is not clean\n{outcome}"
    );

    let status = env.status_json();
    let states = status_states(&status);
    let ready = states
        .iter()
        .filter(|((kind, name), state)| {
            kind == "Bridge" && name.starts_with(PREFIX) && state.as_str() == "Ready"
        })
        .count();
    assert_eq!(
        ready, count,
        "status does not list every bridge Ready: {states:?}"
    );
}

/// The scenario of the brief: 200 bridges, killed once about 60 exist.
#[test]
fn sigkill_halfway_through_apply_is_repaired_by_the_next_apply() {
    crash_and_repair("crash-half", 200, 60);
}

/// Killed as soon as the first bridge appears: the narrowest window, between creating
/// a link and marking it (and recording it).
#[test]
fn sigkill_right_after_the_first_create_is_repaired() {
    crash_and_repair("crash-first", 30, 1);
}

// ---------------------------------------------------------------------------------------
// plan and status after an interrupted apply
// ---------------------------------------------------------------------------------------

const PLAN_PREFIX: &str = "gvq";
/// Revision A declares these bridges with MTU 1400 ...
const SET_A: Range<usize> = 0..300;
/// ... and revision B these with MTU 1450: applying B over A deletes 30 bridges, updates
/// 270 and creates 30. (Few deletes: the kernel takes ~35 ms to delete a bridge, and each
/// round deletes twice.)
const SET_B: Range<usize> = 30..330;

/// Makes the manifest dir declare exactly `set`, with `mtu`. The dir stays the same
/// path, so A and B are one source (an apply prunes what the previous one declared).
fn declare(manifests: &Manifests, set: Range<usize>, mtu: u32) {
    for i in SET_A.start.min(SET_B.start)..SET_A.end.max(SET_B.end) {
        let file = format!("{PLAN_PREFIX}{i}.yaml");
        if set.contains(&i) {
            manifests.write(
                &file,
                &bridge_manifest(
                    &format!("{PLAN_PREFIX}{i}"),
                    &[],
                    &format!("  mtu: {mtu}\n"),
                ),
            );
        } else if manifests.path().join(&file).exists() {
            manifests.remove(&file);
        }
    }
}

fn names(set: Range<usize>) -> BTreeSet<String> {
    set.map(|i| format!("{PLAN_PREFIX}{i}")).collect()
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Kill,
    Term,
}

/// Starts `apply` of the manifest dir and sends `signal` once `after_events` link events
/// of `gvq*` bridges have been seen. Returns how it ended and how many events were seen
/// (`None`: it exited before the kill point). `after_events == usize::MAX`: never kill.
fn apply_interrupted(
    env: &TestEnv,
    manifests: &Manifests,
    events: &Receiver<String>,
    after_events: usize,
    signal: Signal,
) -> (ExitStatus, Option<usize>) {
    let mut child = env
        .gitvisor_command(["apply", manifests.path_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start gitvisor apply");
    let started = Instant::now();
    let mut seen = 0usize;
    loop {
        match events.recv_timeout(Duration::from_millis(2)) {
            Ok(name) if name.starts_with(PLAN_PREFIX) => seen += 1,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` stopped"),
        }
        if seen >= after_events {
            // `ip netns exec` execs gitvisor in place: this is gitvisor's own pid.
            match signal {
                Signal::Kill => child.kill().expect("cannot SIGKILL gitvisor"),
                Signal::Term => {
                    let sent = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status()
                        .expect("cannot run kill");
                    assert!(sent.success(), "kill -TERM failed");
                }
            }
            let status = child.wait().expect("cannot wait for gitvisor");
            return (status, Some(seen));
        }
        if let Some(status) = child.try_wait().expect("cannot wait for gitvisor") {
            return (status, None);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "apply made no progress: {seen} link events after 90 s"
        );
    }
}

/// Counts the `gvq*` link events of one complete apply (the monitor is synced first and
/// after, so no event of another command is counted).
fn events_of_a_full_apply(
    env: &TestEnv,
    manifests: &Manifests,
    events: &Receiver<String>,
) -> usize {
    sync_monitor(env, events);
    let outcome = env.apply(manifests.path()).expect_code(0);
    drop(outcome);
    let mut count = 0;
    const PROBE: &str = "gv-sync";
    env.ip(["link", "add", PROBE, "type", "bridge"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "`ip monitor link` never reported {PROBE}"
        );
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(name) if name.starts_with(PLAN_PREFIX) => count += 1,
            Ok(name) if name == PROBE => break,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` exited"),
        }
    }
    env.ip(["link", "del", PROBE]);
    count
}

/// The changes of a plan JSON object, by `(kind, name)`.
fn changes_by_id(plan: &Value) -> BTreeMap<(String, String), Value> {
    plan["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("plan without changes: {plan:#}"))
        .iter()
        .map(|change| {
            (
                (
                    change["kind"].as_str().unwrap_or("?").to_owned(),
                    change["name"].as_str().unwrap_or("?").to_owned(),
                ),
                change.clone(),
            )
        })
        .collect()
}

/// Panics, listing the differences, unless `plan` (from `plan --output json`) has exactly
/// the changes (kind, name, action, fields, reason, effect) of `applied` (the plan an
/// `apply --output json` made and carried out).
fn assert_same_changes(when: &str, plan: &Value, applied: &Value) {
    let planned = changes_by_id(plan);
    let carried_out = changes_by_id(applied);
    let mut differences = Vec::new();
    for (id, change) in &planned {
        match carried_out.get(id) {
            None => differences.push(format!("{id:?}: planned {change}, apply did not list it")),
            Some(other) if other != change => {
                differences.push(format!("{id:?}: planned {change}\n    apply made {other}"))
            }
            Some(_) => {}
        }
    }
    for (id, change) in &carried_out {
        if !planned.contains_key(id) {
            differences.push(format!("{id:?}: not planned, apply made {change}"));
        }
    }
    let total = differences.len();
    differences.truncate(10);
    assert!(
        differences.is_empty(),
        "{when}: plan and the next apply differ in {total} changes:\n  {}",
        differences.join("\n  ")
    );
    assert_eq!(plan["summary"], applied["summary"], "{when}: plan summary");
}

/// `status --output json` after an interrupted apply shows a revision that was
/// recorded, A's or B's, with the resources of that revision.
fn assert_status_is_a_recorded_state(when: &str, env: &TestEnv, rev_a: &Value, rev_b: &Value) {
    let outcome = env.gitvisor(["status", "--output", "json"]);
    assert_eq!(outcome.code, Some(0), "{when}: status failed\n{outcome}");
    let status = outcome.json();
    let last = &status["lastRevision"]["id"];
    let resources: BTreeSet<String> = status_states(&status)
        .into_keys()
        .map(|(_, name)| name)
        .collect();
    if last == rev_a {
        assert_eq!(resources, names(SET_A), "{when}: status of revision A");
    } else if last == rev_b {
        assert_eq!(resources, names(SET_B), "{when}: status of revision B");
    } else {
        panic!("{when}: status shows no recorded revision:\n{outcome}");
    }
}

#[test]
fn after_an_interrupted_apply_plan_shows_exactly_what_the_next_apply_does() {
    let Some(env) = TestEnv::new("crash-plan") else {
        return;
    };
    let manifests = Manifests::new();
    let (mut monitor, events) = env.monitor_links();
    sync_monitor(&env, &events);

    declare(&manifests, SET_A, 1400);
    let rev_a = env.plan_json(manifests.path())["revision"].clone();
    declare(&manifests, SET_B, 1450);
    let rev_b = env.plan_json(manifests.path())["revision"].clone();

    // How many link events a whole apply of B over A makes, to spread the kill points.
    declare(&manifests, SET_A, 1400);
    env.apply(manifests.path()).expect_code(0);
    declare(&manifests, SET_B, 1450);
    let total = events_of_a_full_apply(&env, &manifests, &events);
    assert!(total >= 330, "an apply of B made only {total} link events");

    let mut rounds: Vec<(usize, Signal)> = [1, 10, 25, 40, 55, 70, 85, 100]
        .iter()
        .map(|percent| ((total * percent / 100).max(1), Signal::Kill))
        .collect();
    rounds.push((total / 3, Signal::Term));
    rounds.push((total * 9 / 10, Signal::Term));

    let mut interrupted = 0;
    for (after_events, signal) in rounds {
        declare(&manifests, SET_A, 1400);
        env.apply(manifests.path()).expect_code(0);
        declare(&manifests, SET_B, 1450);
        sync_monitor(&env, &events);
        let (exit, killed_at) = apply_interrupted(&env, &manifests, &events, after_events, signal);
        let when = format!("{signal:?} after {killed_at:?} of {total} link events ({exit})");
        if killed_at.is_some() && exit.code().is_none() {
            interrupted += 1;
        }
        eprintln!("{when}");

        assert_status_is_a_recorded_state(&when, &env, &rev_a, &rev_b);
        let plan = env.gitvisor(["plan", manifests.path_str(), "--output", "json"]);
        assert!(
            matches!(plan.code, Some(0 | 2)),
            "{when}: plan failed\n{plan}"
        );
        assert!(!plan.stderr.contains("corrupt"), "{when}: {}", plan.stderr);
        let applied = env.gitvisor(["apply", manifests.path_str(), "--output", "json"]);
        assert_eq!(applied.code, Some(0), "{when}: the next apply\n{applied}");
        assert_same_changes(&when, &plan.json(), &applied.json()["plan"]);

        let clean = env.plan_detailed(manifests.path());
        assert_eq!(clean.code, Some(0), "{when}: plan after the apply\n{clean}");
        let bridges: BTreeSet<String> = env
            .link_names()
            .into_iter()
            .filter(|name| name.starts_with(PLAN_PREFIX))
            .collect();
        assert_eq!(
            bridges,
            names(SET_B),
            "{when}: bridges after the next apply"
        );
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(
        interrupted >= 6,
        "only {interrupted} applies were interrupted part-way; the crash was not exercised"
    );
}
