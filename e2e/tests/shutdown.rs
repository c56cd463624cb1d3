//! SIGTERM part-way through `apply` (systemd stopping the controller, or Ctrl-C): gitvisor
//! starts no further step, lets the running ones stop at a safe point, reports which were
//! cancelled and exits 1; no bridge is left under a temporary name or without its
//! marker; the next `apply` finishes the job.
//!
//! As in `crash.rs`, the signal is timed from the kernel's side (`ip monitor link`), so
//! the test does not depend on how fast this machine is.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, nth_address, status_states};

const PREFIX: &str = "gvs";
const COUNT: usize = 200;
const SIGNAL_AT: usize = 20;

#[test]
fn sigterm_part_way_through_apply_cancels_cleanly_and_the_next_apply_finishes() {
    let Some(env) = TestEnv::new("shutdown-term") else {
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
    let (mut monitor, events) = env.synced_link_monitor();

    let child = env
        .gitvisor_command(["apply", manifests.path_str(), "--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start gitvisor apply");
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    let signalled = loop {
        if let Ok(name) = events.recv_timeout(Duration::from_millis(2))
            && name.starts_with(PREFIX)
        {
            seen.insert(name);
        }
        if seen.len() >= SIGNAL_AT {
            // `ip netns exec` execs gitvisor in place: the child's pid is gitvisor's.
            let status = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("cannot run kill");
            assert!(status.success(), "kill -TERM failed");
            break true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "apply made no progress: {} bridges after 90 s",
            seen.len()
        );
        if seen.len() == COUNT {
            break false;
        }
    };
    let output = child.wait_with_output().expect("cannot wait for gitvisor");
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(signalled, "apply finished before the test could signal it");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report after SIGTERM ({e}); stderr:\n{stderr}"));
    let results = report["report"]["results"]
        .as_array()
        .expect("the report lists results");
    let cancelled: BTreeSet<String> = results
        .iter()
        .filter(|r| r["result"] == "cancelled")
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    eprintln!(
        "SIGTERM after {} bridges appeared: {} of {COUNT} steps cancelled",
        seen.len(),
        cancelled.len()
    );
    if cancelled.is_empty() {
        // Every step had started or finished before the signal landed: nothing to check
        // about cancellation, and saying so beats passing silently.
        assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
        gitvisor_e2e::loud("shutdown: the signal landed after the last step started");
    } else {
        assert_eq!(
            output.status.code(),
            Some(1),
            "a cancelled apply is not converged; stderr:\n{stderr}"
        );
        assert_eq!(report["converged"], false);
    }

    // What the cancel left: only declared names, every one marked; nothing under a
    // temporary name.
    for link in env.links() {
        if link.name == "lo" {
            continue;
        }
        assert!(
            link.name.starts_with(PREFIX),
            "a link the cancel left behind: {link:?}"
        );
        assert!(link.is_marked(), "bridge without the marker: {link:?}");
    }
    let states = status_states(&env.status_json());
    let progressing = states
        .values()
        .filter(|state| state.as_str() == "Progressing")
        .count();
    assert_eq!(
        progressing,
        cancelled.len(),
        "every cancelled step is Progressing in the status: {states:?}"
    );

    // The next run finishes the job.
    env.apply(manifests.path()).expect_code(0);
    let names: BTreeSet<String> = env
        .links()
        .into_iter()
        .filter(|l| l.name != "lo")
        .map(|l| l.name)
        .collect();
    assert_eq!(names.len(), COUNT);
    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(
        outcome.code,
        Some(0),
        "plan after the next apply\n{outcome}"
    );
}
