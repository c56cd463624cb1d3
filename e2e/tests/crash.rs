//! Crash safety (DESIGN §1.8: "each step is idempotent so a crash at any point is repaired
//! by the next run"): `apply` of 200 bridges is killed with SIGKILL part-way through, and
//! the next `apply` must converge to exactly the declared state — no duplicates, no
//! leftovers, no bridge without its marker — and a plan after that must be clean.
//!
//! The kill is timed from the kernel's side: `ip monitor link` streams link events while
//! gitvisor runs, and the process is killed once [`KILL_AT`] distinct `gvk*` links have
//! been seen. That does not depend on how fast this machine is.

use std::collections::BTreeSet;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, nth_address, status_states};

const COUNT: usize = 200;
const KILL_AT: usize = 60;
const PREFIX: &str = "gvk";

/// Waits until the monitor reports `name` (so it is subscribed before gitvisor starts).
fn wait_for_event(events: &std::sync::mpsc::Receiver<String>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(seen) if seen == name => return,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("`ip monitor link` never reported {name}");
}

#[test]
fn sigkill_during_apply_is_repaired_by_the_next_apply() {
    let Some(env) = TestEnv::new("crash") else {
        return;
    };
    let manifests = Manifests::new();
    for i in 0..COUNT {
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
    env.ip(["link", "add", "gv-sync", "type", "bridge"]);
    wait_for_event(&events, "gv-sync");
    env.ip(["link", "del", "gv-sync"]);

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
        if seen.len() >= KILL_AT {
            // Child::kill is SIGKILL; `ip netns exec` execs gitvisor in place, so this
            // is gitvisor's own pid.
            child.kill().expect("cannot SIGKILL gitvisor");
            let _ = child.wait();
            break true;
        }
        if let Some(status) = child.try_wait().expect("cannot wait for gitvisor") {
            eprintln!("apply finished ({status}) before {KILL_AT} bridges were seen");
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
        "apply of {COUNT} bridges completed before the test could kill it part-way; \
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
        "killed after {:?}: {} of {COUNT} bridges exist, {marked} marked, {addressed} with an address",
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
            .filter(|i| *i < COUNT)
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
    assert_eq!(names.len(), COUNT, "expected exactly {COUNT} bridges");

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
        ready, COUNT,
        "status does not list every bridge Ready: {states:?}"
    );
}
