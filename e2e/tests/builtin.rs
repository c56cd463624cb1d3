//! VirtualMachines with `hypervisor: builtin` against the real host: gitvisor launches
//! `gitvisor-vmm` (found next to itself) on this machine's KVM with the test guest of
//! `e2e/guests/builtin.c`, a tap on a managed bridge, in the test's own network namespace.
//!
//! In order, on one VM: `apply` SIGKILLed as soon as the run dir appears, finished by the
//! next `apply`; the process is gitvisor-vmm, named by the run dir's pid file, and its
//! control socket says `running`; the guest's output is in the console log where QEMU's
//! goes; the tap is marked, enslaved and up; `gitvisor console` reaches the guest both
//! ways; a second plan is clean; `state: Stopped` shuts the guest down with the ACPI power button;
//! a guest that ignores it is stopped hard after `shutdownTimeout`; prune removes the VM,
//! its tap and run dir and keeps the bridge. This machine's own KVM hangs stock kernels;
//! Debian's kernel on `hypervisor: builtin` is `e2e/tests/kvm.rs`, on a nested KVM.

use std::time::{Duration, Instant};

use gitvisor_e2e::builtin::{self, exe_of, vmm_api};
use gitvisor_e2e::vms::{self, VmGuard, vm_manifest};
use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, skip, status_states};

/// A guard against a hang, not a measurement: the guest is up in milliseconds.
const PATIENCE: Duration = Duration::from_secs(60);

#[track_caller]
fn assert_plan_clean(env: &TestEnv, manifests: &Manifests) {
    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(outcome.code, Some(0), "expected a clean plan\n{outcome}");
}

fn taps(env: &TestEnv) -> Vec<gitvisor_e2e::Link> {
    env.links()
        .into_iter()
        .filter(|l| l.name != "lo" && l.name != "br-mv")
        .collect()
}

fn spec(kernel: &std::path::Path, cmdline: &str, state: &str) -> String {
    format!(
        "hypervisor: builtin\ncpus: 1\nmemory: 32MiB\nstate: {state}\nshutdownTimeout: 3s\n\
         boot:\n  kernel: {}\n  cmdline: {cmdline}\n\
         networks:\n  - bridge: br-mv\n",
        kernel.display()
    )
}

#[test]
fn builtin_lifecycle() {
    let Some(env) = TestEnv::new("vm-builtin") else {
        return;
    };
    if let Some(why) = builtin::missing_facility() {
        skip(&gitvisor_e2e::current_test_name("vm-builtin"), &why);
        return;
    }
    let guard = VmGuard::new(&env);
    let scratch = tempfile::tempdir().expect("temp dir");
    let kernel = builtin::build_guest(scratch.path());
    let manifests = Manifests::new();
    manifests.write(
        "bridge.yaml",
        &bridge_manifest("br-mv", &[], "  addresses: [10.232.0.1/24]\n"),
    );
    let write_vm = |cmdline: &str, state: &str| {
        manifests.write(
            "vm.yaml",
            &vm_manifest("micro", &spec(&kernel, cmdline, state)),
        );
    };
    write_vm("gv.test", "Running");

    // 1. apply, SIGKILLed as soon as the VM's run dir appears, then finished.
    let killed =
        vms::apply_killed_when_run_dir_appears(&env, manifests.path_str(), "micro", PATIENCE);
    assert!(
        killed,
        "apply finished before the test could kill it part-way"
    );
    assert!(
        taps(&env).len() <= 1,
        "at most the one tap: {:?}",
        taps(&env)
    );
    env.apply(manifests.path()).expect_code(0);
    assert_plan_clean(&env, &manifests);

    // 2. The process is gitvisor-vmm, found by its pid file, and says it runs.
    let pid = guard.pid("micro").expect("the VMM runs");
    let exe = exe_of(pid).expect("its executable");
    assert_eq!(
        exe.file_name().and_then(|n| n.to_str()),
        Some("gitvisor-vmm"),
        "{exe:?}"
    );
    let cmdline = guard.cmdline("micro").expect("its command line");
    let pid_file = guard.run_dir("micro").join("pid");
    assert!(
        cmdline.contains(&pid_file.display().to_string()),
        "{cmdline:?}"
    );
    let status = vmm_api(&guard.run_dir("micro").join("api.sock"), "status")
        .expect("the VMM's control socket answers");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["status"]["pid"], pid, "{status}");
    let states = status_states(&env.status_json());
    assert_eq!(
        states
            .get(&("VirtualMachine".to_owned(), "micro".to_owned()))
            .map(String::as_str),
        Some("Ready")
    );

    // 3. The guest's output is in the console log; its tap is marked, enslaved, up.
    let serial = guard.serial("micro");
    serial.wait_for("GV-BUILTIN-UP", 0, PATIENCE);
    let line = serial.wait_for("GV-CMDLINE ", 0, PATIENCE);
    assert!(
        line.contains("console=ttyS0") && line.contains("gv.test"),
        "{line}"
    );
    let tap_links = taps(&env);
    assert_eq!(tap_links.len(), 1, "{tap_links:?}");
    let tap = &tap_links[0];
    assert_eq!(tap.alias.as_deref(), Some("gitvisor:vm/micro/0"));
    assert_eq!(tap.master.as_deref(), Some("br-mv"));
    assert!(tap.is_up());
    assert!(
        cmdline
            .iter()
            .any(|a| a.starts_with(&format!("tap={},", tap.name))),
        "{cmdline:?}"
    );

    // 4. `gitvisor console` reaches the guest's serial console both ways.
    let echoed = vms::console_echoes(&env, "micro", PATIENCE);
    assert!(
        echoed,
        "the guest never echoed what was typed on its console"
    );
    assert_plan_clean(&env, &manifests);

    // 5. Stopped: the power button, the guest powers off, the VMM exits; run dir and tap stay.
    write_vm("gv.test", "Stopped");
    env.apply(manifests.path()).expect_code(0);
    assert_eq!(guard.pid("micro"), None);
    serial.wait_for("GV-POWER-BUTTON", 0, PATIENCE);
    let vmm_log =
        std::fs::read_to_string(guard.run_dir("micro").join("vmm.log")).expect("the VMM's log");
    assert!(
        vmm_log.contains("exiting: the guest powered off (ACPI S5)"),
        "{vmm_log}"
    );
    assert!(guard.run_dir("micro").join("gitvisor.json").is_file());
    assert_eq!(taps(&env).len(), 1, "a stopped VM keeps its tap");
    assert_plan_clean(&env, &manifests);

    // 6. A guest that ignores the power button runs, and is stopped hard after 3s.
    write_vm("gv.deaf", "Running");
    env.apply(manifests.path()).expect_code(0);
    serial.wait_for("GV-DEAF", 0, PATIENCE);
    let deaf = guard.pid("micro").expect("relaunched");
    assert_ne!(deaf, pid);
    assert_plan_clean(&env, &manifests);
    write_vm("gv.deaf", "Stopped");
    let stop_started = Instant::now();
    env.apply(manifests.path()).expect_code(0);
    assert!(
        stop_started.elapsed() >= Duration::from_secs(3),
        "the shutdown timeout was not awaited"
    );
    assert_eq!(guard.pid("micro"), None);
    assert_eq!(
        serial.lines_starting("GV-POWER-BUTTON").len(),
        1,
        "the deaf guest did not power off by itself"
    );
    assert_plan_clean(&env, &manifests);

    // 7. Prune: VM, tap and run dir go; the bridge stays.
    manifests.remove("vm.yaml");
    env.gitvisor(["apply", manifests.path_str(), "--prune"])
        .expect_code(0);
    assert!(!guard.run_dir("micro").exists());
    assert!(taps(&env).is_empty(), "{:?}", taps(&env));
    assert!(env.link("br-mv").is_some());
    assert_plan_clean(&env, &manifests);
}

#[test]
fn doctor_says_whether_builtin_can_run() {
    if builtin::missing_facility().is_some() {
        skip(
            "doctor_says_whether_builtin_can_run",
            "no KVM, gcc or gitvisor-vmm",
        );
        return;
    }
    let outcome = gitvisor_e2e::gitvisor_offline(["doctor"]);
    let line = outcome
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("builtin"))
        .unwrap_or_else(|| panic!("no builtin line\n{outcome}"))
        .to_owned();
    assert!(line.trim_start().starts_with("ok"), "{line}");
    assert!(
        line.contains(&builtin::vmm_beside_gitvisor().display().to_string()),
        "{line}"
    );
}

/// RAM plus swap of this host, from `/proc/meminfo`, in bytes.
fn host_ram_and_swap() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/meminfo"))
            * 1024
    };
    field("MemTotal") + field("SwapTotal")
}

#[test]
fn a_guest_larger_than_the_host_is_refused_at_plan_and_apply_unless_overcommitted() {
    let Some(env) = TestEnv::new("vm-huge") else {
        return;
    };
    assert!(
        host_ram_and_swap() < 1 << 40,
        "this host can back a 1 TiB guest; the refusal cannot be shown here"
    );
    let manifests = Manifests::new();
    let huge = |annotations: &str| {
        vm_manifest(
            "huge",
            "hypervisor: builtin\nmemory: 1TiB\nboot:\n  kernel: /nonexistent/vmlinux\n",
        )
        .replace("  name: huge\n", &format!("  name: huge\n{annotations}"))
    };
    manifests.write("vm.yaml", &huge(""));
    let expected = "memory: 1TiB is more than this host can back";
    let plan = env.plan_detailed(manifests.path());
    assert!(
        plan.stdout
            .contains(&format!("apply will fail: {expected}")),
        "{plan}"
    );
    let apply = env.apply(manifests.path());
    assert_eq!(apply.code, Some(1), "{apply}");
    assert!(
        format!("{}{}", apply.stdout, apply.stderr).contains(expected),
        "{apply}"
    );
    assert!(
        !env.run_dir().join("vm/huge").exists(),
        "nothing is created for a guest the host cannot back"
    );

    // Annotated, the plan no longer says so (what else stands in the way is the host's).
    manifests.write(
        "vm.yaml",
        &huge("  annotations: {gitvisor.dev/overcommit: \"true\"}\n"),
    );
    let plan = env.plan_detailed(manifests.path());
    assert!(!plan.stdout.contains(expected), "{plan}");
}
