//! Crash safety (DESIGN §1.8: "each step is idempotent so a crash at any point is repaired
//! by the next run"): `apply` of many bridges is killed with SIGKILL part-way through
//! (200 bridges with ~60 made; and 30 with the first one just made), and the next
//! `apply` must converge to exactly the declared state — no duplicates, no
//! leftovers, no bridge without its marker — and a plan after that must be clean.
//!
//! The kill is timed from the kernel's side: `ip monitor link` streams link events while
//! gitvisor runs, and the process is killed once enough distinct `gvk*` links have been
//! seen. That does not depend on how fast this machine is.

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, nth_address, status_states};

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
