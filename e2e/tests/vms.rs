//! VirtualMachines against the real host: QEMU under TCG booting Debian's kernel with a
//! busybox initramfs built by the harness (`gitvisor_e2e::vms`), a file disk, a tap on a
//! managed bridge, a cloud-init seed, in the test's own network namespace.
//!
//! One guest is booted twice in `lifecycle` (a boot costs seconds under TCG), and every
//! scenario the issue asks for runs against it in order: `apply` SIGKILLed part-way
//! through the create, then finished by the next `apply`; the guest boots, sees its disk
//! by serial and its seed's `meta-data`, pings the bridge; a second plan is clean; the VM
//! outlives every gitvisor process and is still managed; `Paused` stops the guest's clock
//! and `Running` resumes it; a memory change is planned as a restart and applied;
//! `Stopped` stops a guest that ignores the ACPI button after the timeout; prune removes
//! the VM, its tap and its run dir. `firmware` boots a boot sector through SeaBIOS and
//! starts an OVMF guest paused with its own variable store, under the state dir, where
//! it survives a simulated host reboot (the run dir removed while the guest is stopped)
//! until the VM is pruned.

use std::time::{Duration, Instant};

use gitvisor_e2e::vms::{self, VmGuard, last_tick, vm_manifest};
use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, change, field, skip, status_states};

/// How long a boot to a marker may take on a loaded 2-core machine under TCG.
const BOOT: Duration = Duration::from_secs(240);

fn ready(test: &str) -> Option<TestEnv> {
    let env = TestEnv::new(test)?;
    if let Some(why) = vms::missing_facility() {
        skip(&gitvisor_e2e::current_test_name(test), &why);
        return None;
    }
    Some(env)
}

#[track_caller]
fn assert_plan_clean(env: &TestEnv, manifests: &Manifests) {
    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(outcome.code, Some(0), "expected a clean plan\n{outcome}");
}

fn web_spec(image: &vms::GuestImage, disk: &std::path::Path, memory: &str, state: &str) -> String {
    format!(
        "cpus: 1\nmemory: {memory}\naccel: tcg\nstate: {state}\nshutdownTimeout: 2s\n\
         boot:\n  kernel: {}\n  initrd: {}\n  cmdline: console=ttyS0 quiet gv.ip=10.231.0.2/24 gv.ping=10.231.0.1\n\
         disks:\n  - path: {}\n\
         networks:\n  - bridge: br-vm\n\
         cloudInit:\n  metaData: |\n    instance-id: e2e-42\n    local-hostname: web\n",
        image.kernel.display(),
        image.initrd.display(),
        disk.display()
    )
}

/// The links in the namespace other than `lo` and the bridge: the VM's taps.
fn taps(env: &TestEnv) -> Vec<gitvisor_e2e::Link> {
    env.links()
        .into_iter()
        .filter(|l| l.name != "lo" && l.name != "br-vm")
        .collect()
}

#[test]
fn lifecycle() {
    let Some(env) = ready("vm-life") else {
        return;
    };
    let image = vms::guest_image().expect("cannot build the guest's initramfs");
    let guard = VmGuard::new(&env);
    let scratch = tempfile::tempdir().expect("temp dir");
    let disk = scratch.path().join("web.img");
    std::fs::write(&disk, vec![0u8; 16 << 20]).expect("disk image");
    let manifests = Manifests::new();
    manifests.write(
        "bridge.yaml",
        &bridge_manifest("br-vm", &[], "  addresses: [10.231.0.1/24]\n"),
    );
    let write_vm = |memory: &str, state: &str| {
        manifests.write(
            "vm.yaml",
            &vm_manifest("web", &web_spec(&image, &disk, memory, state)),
        );
    };
    write_vm("256MiB", "Running");

    // 1. apply, SIGKILLed as soon as the VM's run dir appears (before the taps, seed and
    //    launch are all done), then finished by the next apply.
    let killed = vms::apply_killed_when_run_dir_appears(
        &env,
        manifests.path_str(),
        "web",
        Duration::from_secs(90),
    );
    assert!(
        killed,
        "apply finished before the test could kill it part-way"
    );
    let halfway = taps(&env);
    assert!(halfway.len() <= 1, "at most the one tap: {halfway:?}");
    env.apply(manifests.path()).expect_code(0);
    assert_plan_clean(&env, &manifests);

    // 2. It boots, sees its disk by serial and its seed, and reaches the bridge.
    let serial = guard.serial("web");
    serial.wait_for("GV-BOOT-OK", 0, BOOT);
    serial.wait_for("GV-PING-OK", 0, BOOT);
    let log = serial.text();
    assert!(log.contains("GV-DISK vda serial=disk0"), "{log}");
    assert!(log.contains("GV-DISK vdb serial=cidata"), "{log}");
    let seed = log
        .split("GV-SEED-BEGIN")
        .nth(1)
        .and_then(|rest| rest.split("GV-SEED-END").next())
        .unwrap_or_else(|| panic!("no seed in the serial log:\n{log}"));
    assert!(seed.contains("instance-id: e2e-42"), "{seed}");
    let tap_links = taps(&env);
    assert_eq!(tap_links.len(), 1, "{tap_links:?}");
    let tap = &tap_links[0];
    assert_eq!(tap.alias.as_deref(), Some("gitvisor:vm/web/0"));
    assert_eq!(tap.master.as_deref(), Some("br-vm"));
    assert!(tap.is_up());
    let first = guard.pid("web").expect("the guest runs");

    // 2b. `gitvisor console web` reaches the guest's serial console both ways.
    let echoed = vms::console_echoes(&env, "web", BOOT);
    assert!(
        echoed,
        "the guest never echoed what was typed on its console"
    );

    // 3. No gitvisor process runs now, and the guest still does, and is still managed.
    let (tick, _) = last_tick(&serial).unwrap_or((0, 0.0));
    serial.wait_for("GV-TICK ", tick as usize, BOOT);
    assert_eq!(guard.pid("web"), Some(first));
    let status = env.status_json();
    let states = status_states(&status);
    assert_eq!(
        states
            .get(&("VirtualMachine".to_owned(), "web".to_owned()))
            .map(String::as_str),
        Some("Ready"),
        "{status:#}"
    );
    assert_plan_clean(&env, &manifests);

    // 4. Paused: no tick while paused, and the guest's clock stood still.
    write_vm("256MiB", "Paused");
    let plan = env.plan_json(manifests.path());
    let paused = change(&plan, "VirtualMachine", "web");
    assert_eq!(paused["action"], "update", "{plan:#}");
    assert_eq!(field(paused, "state").expect("state")["new"], "Paused");
    env.apply(manifests.path()).expect_code(0);
    let (n1, uptime1) = last_tick(&serial).expect("ticks");
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        last_tick(&serial).map(|t| t.0),
        Some(n1),
        "a paused guest ticked"
    );
    assert_plan_clean(&env, &manifests);
    write_vm("256MiB", "Running");
    env.apply(manifests.path()).expect_code(0);
    let line = serial.wait_for("GV-TICK ", n1 as usize, BOOT);
    let wall = paused_at.elapsed().as_secs_f64();
    let uptime2: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("uptime in the tick");
    assert!(
        uptime2 - uptime1 < wall - 1.5,
        "the guest's clock ran while paused: {:.2}s of guest time over {wall:.2}s",
        uptime2 - uptime1
    );
    assert_eq!(
        guard.pid("web"),
        Some(first),
        "pause and resume keep the process"
    );

    // 5. A memory change is a restart: planned as such, a new process, a second boot.
    write_vm("320MiB", "Running");
    let plan = env.plan_json(manifests.path());
    let restart = change(&plan, "VirtualMachine", "web");
    assert_eq!(restart["action"], "update", "{plan:#}");
    let memory = field(restart, "memory").expect("memory field");
    assert_eq!(memory["effect"], "restart", "{plan:#}");
    assert!(
        restart["reason"]
            .as_str()
            .unwrap_or("")
            .contains("restarts the guest"),
        "{plan:#}"
    );
    env.apply(manifests.path()).expect_code(0);
    let second = guard.pid("web").expect("relaunched");
    assert_ne!(second, first);
    assert!(
        guard
            .cmdline("web")
            .unwrap_or_default()
            .contains(&"320M".to_owned())
    );
    serial.wait_for("GV-BOOT-OK", 1, BOOT);
    assert_plan_clean(&env, &manifests);

    // 6. Stopped: the guest ignores the power button; stopped hard after 2s.
    write_vm("320MiB", "Stopped");
    let stop_started = Instant::now();
    env.apply(manifests.path()).expect_code(0);
    assert!(
        stop_started.elapsed() >= Duration::from_secs(2),
        "the timeout was not awaited"
    );
    assert_eq!(guard.pid("web"), None);
    assert!(guard.run_dir("web").join("gitvisor.json").is_file());
    assert_eq!(taps(&env).len(), 1, "a stopped VM keeps its tap");
    assert_plan_clean(&env, &manifests);

    // 7. Prune: VM, tap and run dir go; the bridge stays.
    manifests.remove("vm.yaml");
    env.gitvisor(["apply", manifests.path_str(), "--prune"])
        .expect_code(0);
    assert!(!guard.run_dir("web").exists());
    assert!(taps(&env).is_empty(), "{:?}", taps(&env));
    assert!(env.link("br-vm").is_some());
    assert_plan_clean(&env, &manifests);
}

#[test]
fn firmware() {
    let Some(env) = ready("vm-firmware") else {
        return;
    };
    let guard = VmGuard::new(&env);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mbr = scratch.path().join("boot.img");
    vms::boot_sector_image(&mbr);
    let manifests = Manifests::new();
    manifests.write(
        "bios.yaml",
        &vm_manifest(
            "bios",
            &format!(
                "memory: 64MiB\naccel: tcg\nboot: {{firmware: bios}}\ndisks: [{{path: {}}}]\nshutdownTimeout: 1s",
                mbr.display()
            ),
        ),
    );
    let ovmf = std::path::Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd").is_file()
        || std::path::Path::new("/usr/share/OVMF/OVMF_VARS.fd").is_file();
    let uefi_disk = scratch.path().join("uefi.img");
    let write_uefi = |state: &str| {
        manifests.write(
            "uefi.yaml",
            &vm_manifest(
                "uefi",
                &format!(
                    "memory: 128MiB\naccel: tcg\nstate: {state}\nboot: {{firmware: uefi}}\ndisks: [{{path: {}}}]\nshutdownTimeout: 1s",
                    uefi_disk.display()
                ),
            ),
        )
    };
    if ovmf {
        vms::boot_sector_image(&uefi_disk);
        write_uefi("Paused");
    } else {
        skip(
            "firmware (uefi part)",
            "OVMF is not installed (apt install ovmf)",
        );
    }
    env.apply(manifests.path()).expect_code(0);
    guard.serial("bios").wait_for("GV-BIOS-BOOT-OK", 0, BOOT);
    if ovmf {
        // The VM's own variable store is in its data dir under the state dir, not in the
        // run dir (a tmpfs emptied at every boot).
        let nvram = env.state_dir().join("vm/uefi/OVMF_VARS.fd");
        assert!(nvram.is_file(), "the VM's own variable store");
        assert!(!guard.run_dir("uefi").join("OVMF_VARS.fd").exists());
        let cmdline = guard.cmdline("uefi").expect("the paused guest's process");
        assert!(
            cmdline
                .iter()
                .any(|a| a.contains("if=pflash") && a.contains(nvram.to_str().unwrap()))
        );
        assert!(cmdline.contains(&"-S".to_owned()));
        assert_plan_clean(&env, &manifests);

        // A host reboot, simulated: the guest stopped, its run dir gone. What the guest
        // wrote to its variables (a marker here) is still there when it starts again.
        write_uefi("Stopped");
        env.apply(manifests.path()).expect_code(0);
        assert_eq!(guard.pid("uefi"), None);
        let mut variables = std::fs::read(&nvram).expect("the variable store");
        let marker = b"GV-NVRAM-KEPT";
        let at = variables.len() - marker.len();
        variables[at..].copy_from_slice(marker);
        std::fs::write(&nvram, &variables).expect("mark the variable store");
        std::fs::remove_dir_all(guard.run_dir("uefi")).expect("remove the run dir");
        write_uefi("Paused");
        env.apply(manifests.path()).expect_code(0);
        assert!(guard.pid("uefi").is_some(), "started again");
        assert_eq!(
            std::fs::read(&nvram).expect("the variable store"),
            variables,
            "the variables survived the reboot"
        );
    }
    assert_plan_clean(&env, &manifests);
    manifests.remove("bios.yaml");
    if ovmf {
        manifests.remove("uefi.yaml");
    }
    manifests.write("keep.yaml", &bridge_manifest("br-keep", &[], "{}"));
    env.gitvisor(["apply", manifests.path_str(), "--prune"])
        .expect_code(0);
    assert_eq!(guard.pid("bios"), None);
    assert_eq!(guard.pid("uefi"), None);
    assert!(!env.run_dir().join("vm").join("bios").exists());
    assert!(
        !env.state_dir().join("vm/uefi").exists(),
        "a pruned VM loses its variable store"
    );
}

/// A revision that cannot start never stops what runs (issue 17 item 2), on a guest that
/// needs no kernel boot (a boot sector through SeaBIOS): a missing initrd is refused at
/// plan, pointing at the manifest's line and field, and apply leaves the guest as it
/// was (same pid); a kernel file that QEMU cannot load passes the plan's checks, and
/// the restart onto it brings the previous configuration back up and fails the step.
#[test]
fn a_change_that_cannot_start_never_stops_the_running_guest() {
    let Some(env) = ready("vm-keep") else {
        return;
    };
    let guard = VmGuard::new(&env);
    let scratch = tempfile::tempdir().expect("temp dir");
    let mbr = scratch.path().join("boot.img");
    vms::boot_sector_image(&mbr);
    // Not a kernel: QEMU refuses it at launch ("invalid kernel header").
    let not_a_kernel = scratch.path().join("vmlinuz");
    std::fs::write(&not_a_kernel, b"hello").expect("kernel file");
    let missing = scratch.path().join("initrd.img");
    let manifests = Manifests::new();
    let write = |boot: &str| {
        manifests.write(
            "vm.yaml",
            &vm_manifest(
                "keep",
                &format!(
                    "memory: 64MiB\naccel: tcg\nshutdownTimeout: 1s\ndisks: [{{path: {}}}]\nboot:\n{boot}",
                    mbr.display()
                ),
            ),
        );
    };
    write("  firmware: bios\n");
    env.apply(manifests.path()).expect_code(0);
    let serial = guard.serial("keep");
    serial.wait_for("GV-BIOS-BOOT-OK", 0, BOOT);
    let pid = guard.pid("keep").expect("the guest runs");
    let cmdline = guard.cmdline("keep").expect("its command line");

    // 1. A missing initrd: refused at plan with file:line:col: field; apply stops nothing.
    write(&format!(
        "  kernel: {}\n  initrd: {}\n",
        not_a_kernel.display(),
        missing.display()
    ));
    let plan = env.plan_detailed(manifests.path());
    assert_eq!(plan.code, Some(1), "{plan}");
    let expected = format!(
        "vm.yaml:12:13: spec.boot.initrd: {} does not exist on this host",
        missing.display()
    );
    assert!(plan.stdout.contains(&expected), "{plan}");
    assert!(
        plan.stdout
            .contains("keeps running on its previous configuration"),
        "{plan}"
    );
    let apply = env.apply(manifests.path());
    assert_eq!(apply.code, Some(1), "{apply}");
    assert!(
        format!("{}{}", apply.stdout, apply.stderr).contains(&expected),
        "{apply}"
    );
    assert_eq!(guard.pid("keep"), Some(pid), "the guest was not touched");

    // 2. A kernel QEMU cannot load: planned as a restart; the new launch fails after the
    //    stop, and the previous configuration runs again (it boots its disk again).
    write(&format!("  kernel: {}\n", not_a_kernel.display()));
    let plan = env.plan_detailed(manifests.path());
    assert_eq!(plan.code, Some(2), "{plan}");
    let apply = env.apply(manifests.path());
    assert_eq!(apply.code, Some(1), "{apply}");
    let said = format!("{}{}", apply.stdout, apply.stderr);
    assert!(
        said.contains(
            "the new configuration did not start; the guest runs again on its previous configuration"
        ) && said.contains("invalid kernel header"),
        "{apply}"
    );
    let again = guard
        .pid("keep")
        .expect("the previous configuration runs again");
    assert_ne!(again, pid, "a new process, from the previous command line");
    assert_eq!(guard.cmdline("keep").as_ref(), Some(&cmdline));
    serial.wait_for("GV-BIOS-BOOT-OK", 1, BOOT);
    // The revision is still pending: the next plan tries the restart again.
    assert_eq!(env.plan_detailed(manifests.path()).code, Some(2));

    // Back to the running configuration: nothing to do.
    write("  firmware: bios\n");
    assert_plan_clean(&env, &manifests);
    manifests.remove("vm.yaml");
    manifests.write("keep.yaml", &bridge_manifest("br-keep", &[], "{}"));
    env.gitvisor(["apply", manifests.path_str(), "--prune"])
        .expect_code(0);
    assert_eq!(guard.pid("keep"), None);
}
