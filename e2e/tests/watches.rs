//! The controller's watches (`daemon/watches.rs`) against the real kernel in a test
//! namespace: a change made by hand that the host announces is repaired at once, with
//! the resync set to an hour so that only the watch can have done it.
//!
//! Each repair is asserted within a generous 5 s (the goal is 1 s; how fast is
//! measured by `bench/controller.sh`, not asserted here) and its time is printed.

use std::process::Command;
use std::time::Duration;

use gitvisor_e2e::controller::{Controller, api_status, wait_for};
use gitvisor_e2e::vms::{self, VmGuard, vm_manifest};
use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, skip};

/// Long enough that no resync happens during a test.
const NO_RESYNC: &str = "1h";
/// What a repair may take here; the goal is 1 s.
const REPAIRED_WITHIN: Duration = Duration::from_secs(5);
const STARTED_WITHIN: Duration = Duration::from_secs(60);
/// A QEMU launch under TCG on a loaded 2-core machine.
const LAUNCHED_WITHIN: Duration = Duration::from_secs(60);

/// `nft` in the test namespace.
fn nft(env: &TestEnv, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", env.netns(), "nft"])
        .args(args)
        .output()
        .expect("cannot run nft");
    assert!(
        output.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn isolated(env: &TestEnv, bridge: &str) -> bool {
    nft(env, &["list", "table", "inet", "gitvisor"]).contains(&format!(
        "{bridge}: isolate, nothing forwarded from {bridge}"
    ))
}

/// A host-only bridge (an address, no ports, no NAT: isolated by gitvisor's rules) is
/// deleted by hand, loses its address by hand, and has its rules flushed by hand; each
/// time the watch sees it and the controller repairs it within seconds, although the
/// next resync is an hour away.
#[test]
fn a_bridge_its_address_and_its_rules_changed_by_hand_are_repaired_at_once() {
    let Some(env) = TestEnv::new("watch-net") else {
        return;
    };
    env.ip(["link", "set", "lo", "up"]);
    let address = "10.77.0.1/24";
    let manifests = Manifests::new();
    manifests.write(
        "a.yaml",
        &bridge_manifest("gvw-a", &[], &format!("  addresses: [{address}]\n")),
    );
    let (mut controller, _) = Controller::start(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    wait_for("the first reconcile", STARTED_WITHIN, || {
        env.link("gvw-a").is_some_and(|l| l.is_marked()) && isolated(&env, "gvw-a")
    });
    let status = api_status(env.run_dir());
    let watching = status["watching"]["Bridge"].as_str().unwrap_or_default();
    assert!(
        watching.starts_with("watched: netlink"),
        "status says how bridges are watched: {status:#}"
    );
    let text = env.gitvisor(["status"]).expect_code(0).stdout;
    assert!(
        text.contains("  Bridge: watched: netlink") && text.contains("  Volume: not watched"),
        "{text}"
    );

    nft(&env, &["flush", "table", "inet", "gitvisor"]);
    assert!(!isolated(&env, "gvw-a"), "the flush took the rules");
    let took = wait_for(
        "the watch to restore the flushed rules",
        REPAIRED_WITHIN,
        || isolated(&env, "gvw-a"),
    );
    println!("rules flushed by hand: restored in {took:?}");

    env.ip(["addr", "del", address, "dev", "gvw-a"]);
    let took = wait_for(
        "the watch to restore the removed address",
        REPAIRED_WITHIN,
        || {
            env.link("gvw-a")
                .is_some_and(|l| l.addresses.iter().any(|a| a == address))
        },
    );
    println!("address removed by hand: restored in {took:?}");

    env.ip(["link", "del", "gvw-a"]);
    let took = wait_for(
        "the watch to recreate the deleted bridge",
        REPAIRED_WITHIN,
        || {
            env.link("gvw-a")
                .is_some_and(|l| l.is_marked() && l.addresses.iter().any(|a| a == address))
                && isolated(&env, "gvw-a")
        },
    );
    println!("bridge deleted by hand: recreated in {took:?}");

    let status = controller.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
}

/// A QEMU guest (a boot sector under TCG: no kernel needed) whose process is killed by
/// hand is started again at once: the pidfd the VM watch holds announces the end,
/// although the pid file stays and the next resync is an hour away.
#[test]
fn a_killed_qemu_process_is_started_again_at_once() {
    let Some(env) = TestEnv::new("watch-vm") else {
        return;
    };
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        skip(
            "watches::a_killed_qemu_process_is_started_again_at_once",
            "qemu-system-x86_64 is not installed (apt install qemu-system-x86)",
        );
        return;
    }
    env.ip(["link", "set", "lo", "up"]);
    let guard = VmGuard::new(&env);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mbr = scratch.path().join("boot.img");
    vms::boot_sector_image(&mbr);
    let manifests = Manifests::new();
    manifests.write(
        "vm.yaml",
        &vm_manifest(
            "gvw-vm",
            &format!(
                "memory: 64MiB\naccel: tcg\nshutdownTimeout: 1s\ndisks: [{{path: {}}}]\nboot:\n  firmware: bios\n",
                mbr.display()
            ),
        ),
    );
    let (mut controller, _) = Controller::start(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    wait_for(
        "the first reconcile to launch the guest",
        LAUNCHED_WITHIN,
        || guard.pid("gvw-vm").is_some(),
    );
    let first = guard.pid("gvw-vm").expect("the guest runs");
    let status = api_status(env.run_dir());
    assert!(
        status["watching"]["VirtualMachine"]
            .as_str()
            .is_some_and(|line| line.starts_with("watched: a pidfd")),
        "status says how VMs are watched: {status:#}"
    );

    let killed = Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let took = wait_for(
        "the watch to start the killed guest again",
        LAUNCHED_WITHIN,
        || guard.pid("gvw-vm").is_some_and(|pid| pid != first),
    );
    println!("QEMU killed by hand: running again in {took:?}");

    let status = controller.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
}
