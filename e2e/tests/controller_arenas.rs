//! `gitvisor run` limits glibc's malloc arenas (`reconciler/src/cli/arenas.rs`): the
//! controller, in its own namespace, is the process that was started (the same pid
//! sends READY=1) and runs with `MALLOC_ARENA_MAX=2`; an administrator's own value is
//! kept.

use gitvisor_e2e::controller::Controller;
use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, gitvisor_bin};

/// The `MALLOC_ARENA_MAX=` entries of process `pid`'s environment.
fn arena_max(pid: u32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the controller's environ");
    environ
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .filter(|entry| entry.starts_with("MALLOC_ARENA_MAX="))
        .collect()
}

#[test]
fn the_controller_runs_with_two_malloc_arenas_unless_told_otherwise() {
    let Some(env) = TestEnv::new("ctl-arenas") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge_manifest("gva-a", &[], "  mtu: 1500\n"));
    let args = ["--source", manifests.path_str(), "--resync", "1h"];

    let (mut controller, _) = Controller::start(&env, &args);
    assert_eq!(arena_max(controller.pid()), ["MALLOC_ARENA_MAX=2"]);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", controller.pid())).expect("the exe"),
        gitvisor_bin()
            .canonicalize()
            .expect("the binary under test"),
        "the controller is the process that was started"
    );
    assert!(controller.terminate().success(), "{}", controller.log());

    let mut controller = Controller::spawn_with_env(&env, &args, &[("MALLOC_ARENA_MAX", "4")]);
    controller.wait_ready();
    assert_eq!(arena_max(controller.pid()), ["MALLOC_ARENA_MAX=4"]);
    assert!(controller.terminate().success(), "{}", controller.log());
}
