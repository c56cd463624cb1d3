//! The shipped systemd unit and the drivers cannot drift apart: an apply runs under the
//! restrictions `contrib/systemd/gitvisor.service` itself declares (read from the file,
//! reproduced by `gitvisor_e2e::unit`), with a container (real runc, an OCI image), a
//! bridge serving DHCP (real dnsmasq) and a VM (real QEMU), and every one of them must
//! work: the containers run (one from an OCI image the store unpacks, one as another
//! user whose health check is a `runc exec`), reach their bridge and keep their root
//! readable to non-root users and mounted where the host sees it; a client gets a
//! lease; the guest's firmware boots; a plan sees nothing to do. Then the same sandbox
//! removes the containers and the VM and stops dnsmasq (which runs as `nobody`, so
//! stopping it needs `CAP_KILL`).
//!
//! On the unit as it was (issue 17) this fails at each step in turn: `ProtectClock=`
//! closes the devices and `ProtectHostname=` forbids runc's `sethostname(2)` (both
//! refused by name); `dnsmasq: failed to bind DHCP server socket: Permission denied`;
//! `runc create failed: unable to apply caps`; `UMask=0077` leaves a container's root
//! unreadable to its users; a mount namespace hides the containers' mounts; without
//! `CAP_SYS_PTRACE` a health check cannot open `/proc/PID/ns/ipc`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gitvisor_e2e::containers::{ContainerEnv, have};
use gitvisor_e2e::network::namespace_pids;
use gitvisor_e2e::unit::{ServiceSandbox, describe};
use gitvisor_e2e::{Manifests, Netns, Outcome, bridge_manifest, loud, run_command, skip, vms};

const BRIDGE: &str = "br-unit";

/// The bridge, with DHCP when `dhcp`.
fn bridge(dhcp: bool) -> String {
    let dhcp = if dhcp {
        "  dhcp: {range: 10.79.0.100-10.79.0.150}\n"
    } else {
        ""
    };
    bridge_manifest(BRIDGE, &[], &format!("  addresses: [10.79.0.1/24]\n{dhcp}"))
}

/// Kills what the test's gitvisor left in its namespace (dnsmasq, QEMU), also when the
/// test fails; runc's containers are `ContainerEnv`'s.
struct KillLeftovers(String);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in namespace_pids(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Whether a live process has `pid` and a command name starting with `name`.
fn runs(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.starts_with(name))
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

fn pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether the host's mount table (this test process's) has a mount at `target`.
fn host_sees_mount(target: &Path) -> bool {
    let target = target.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_ref()))
}

/// A client namespace on the bridge asks for a DHCP lease (busybox `udhcpc`).
fn lease(host_ns: &str) -> Outcome {
    let client = Netns::create("unit-dhcp-client");
    let ip = |args: &[&str]| {
        let mut command = Command::new("ip");
        command.args(args);
        run_command(command).expect_code(0);
    };
    ip(&[
        "-n",
        host_ns,
        "link",
        "add",
        "dhcpc0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        client.name(),
    ]);
    // Marked like a workload's link, so the Bridge driver keeps it.
    ip(&[
        "-n",
        host_ns,
        "link",
        "set",
        "dhcpc0",
        "alias",
        "gitvisor:e2e-guest",
    ]);
    ip(&[
        "-n", host_ns, "link", "set", "dhcpc0", "master", BRIDGE, "up",
    ]);
    ip(&["-n", client.name(), "link", "set", "eth0", "up"]);
    let mut udhcpc = Command::new("ip");
    udhcpc.args(["netns", "exec", client.name()]).args([
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "10",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ]);
    run_command(udhcpc)
}

#[test]
fn an_apply_under_the_shipped_units_sandbox_runs_a_container_a_dhcp_bridge_and_a_vm() {
    let test = "an_apply_under_the_shipped_units_sandbox_runs_a_container_a_dhcp_bridge_and_a_vm";
    let sandbox = ServiceSandbox::shipped();
    // What breaks a driver whatever else the unit says (devices closed, sethostname
    // forbidden, …) is refused with the reason.
    assert_eq!(
        sandbox.refused(),
        Vec::<String>::new(),
        "the unit sets what breaks a driver"
    );
    let Some((env, images)) = ContainerEnv::new("unit_sandbox") else {
        return;
    };
    for tool in [
        "setpriv",
        "unshare",
        "dnsmasq",
        "qemu-system-x86_64",
        "python3",
        "systemd-analyze",
    ] {
        if !have(tool) {
            skip(test, &format!("needs {tool}"));
            return;
        }
    }
    let _leftovers = KillLeftovers(env.netns().to_owned());
    loud(&format!(
        "{test}: reproduced from the unit: {:?}",
        sandbox.reproduced()
    ));
    let run_dir = env.runc_root().parent().expect("a run dir").to_owned();
    let sandboxed = |args: &[&OsStr]| {
        let command = sandbox.wrap(&env.gitvisor_command(args));
        let said = describe(&command);
        let outcome = run_command(command);
        (said, outcome)
    };

    let scratch = tempfile::tempdir().expect("a scratch dir");
    let disk = scratch.path().join("boot.img");
    vms::boot_sector_image(&disk);
    let manifests = Manifests::new();
    manifests.write("bridge.yaml", &bridge(true));
    manifests.write(
        "web.yaml",
        &ContainerEnv::container_manifest(
            "web",
            &format!(
                "  image: {}:v1\n  stopTimeout: 1s\n  network: {{bridge: {BRIDGE}, address: 10.79.0.2/24, gateway: 10.79.0.1}}\n",
                images.layout.display()
            ),
        ),
    );
    // Its health check is a `runc exec` into a process of another user (the supervisor,
    // which inherits the sandbox, runs it).
    manifests.write(
        "nobody.yaml",
        &ContainerEnv::container_manifest(
            "nobody",
            &format!(
                "  image: {}\n  command: [sleep, '100000']\n  user: '65534:65534'\n  stopTimeout: 1s\n  healthCheck: {{command: ['true'], interval: 200ms, timeout: 5s, retries: 1}}\n",
                images.rootfs.display()
            ),
        ),
    );
    manifests.write(
        "vm.yaml",
        &vms::vm_manifest(
            "vm",
            &format!(
                "memory: 64MiB\naccel: tcg\nboot: {{firmware: bios}}\ndisks: [{{path: {}}}]\nnetworks: [{{bridge: {BRIDGE}}}]\nshutdownTimeout: 1s",
                disk.display()
            ),
        ),
    );

    let (said, apply) = sandboxed(&[OsStr::new("apply"), manifests.path().as_os_str()]);
    assert_eq!(
        apply.code,
        Some(0),
        "apply under the unit's sandbox failed ({said})\n{apply}"
    );

    // The container runs, from an image the store unpacked under the sandbox, and
    // reaches its bridge.
    let (status, _) = env.container("web").expect("runc knows the container");
    assert_eq!(status, "running");
    env.exec("web", &["ping", "-c", "1", "-W", "5", "10.79.0.1"])
        .expect_code(0);
    // A process of another user finds its root file system readable (the unit's umask
    // must not make the container's own directories private to root).
    let mut other_user = Command::new("runc");
    other_user.arg("--root").arg(env.runc_root()).args([
        "exec",
        "--user",
        "65534:65534",
        "web",
        "ls",
        "/bin/sh",
    ]);
    run_command(other_user).expect_code(0);
    // The non-root container's health check passes.
    let health = || -> serde_json::Value {
        std::fs::read(env.bundle("nobody").join("health.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    };
    env.wait_for(
        "the health check of a container of another user to pass",
        Duration::from_secs(30),
        || health()["status"] != "starting" && !health()["status"].is_null(),
    );
    assert_eq!(health()["status"], "healthy", "{}", health());
    // Its root file system is mounted where the host sees it: a service in a mount
    // namespace of its own (ProtectSystem=, PrivateTmp=, …) would hide it from the
    // host, from `gitvisor` run in a shell and from the next controller instance.
    assert!(
        host_sees_mount(&env.bundle("web").join("rootfs")),
        "the container's root file system is not mounted in the host's mount namespace"
    );

    // dnsmasq serves the bridge: a client gets a lease.
    // (A few tries: on a loaded machine one udhcpc's ten seconds can pass unanswered.)
    let mut tries = Vec::new();
    for _ in 0..3 {
        let outcome = lease(env.netns());
        let leased = outcome.code == Some(0) && outcome.stderr.contains("obtained");
        tries.push(outcome);
        if leased {
            break;
        }
    }
    assert!(
        tries.last().is_some_and(|o| o.stderr.contains("obtained")),
        "no DHCP lease from the bridge's dnsmasq\n{}\ndnsmasq's log:\n{}",
        tries
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        std::fs::read_to_string(run_dir.join(format!("network/dhcp/{BRIDGE}/dnsmasq.log")))
            .unwrap_or_default()
    );
    let dnsmasq = run_dir.join(format!("network/dhcp/{BRIDGE}/dnsmasq.pid"));
    let dnsmasq_pid = pid_file(&dnsmasq).expect("dnsmasq's pid file");

    // QEMU runs the guest, whose firmware booted its disk.
    let vm_dir = run_dir.join("vm/vm");
    let qemu = pid_file(&vm_dir.join("pid")).expect("QEMU's pid file");
    assert!(
        runs(qemu, "gitvisor-vm-vm"),
        "QEMU (pid {qemu}) is not running"
    );
    vms::SerialLog {
        path: vm_dir.join("serial.log"),
    }
    .wait_for("GV-BIOS-BOOT-OK", 0, Duration::from_secs(60));

    // The drivers' long-running processes are inside the sandbox.
    for (what, pid) in [("dnsmasq", dnsmasq_pid), ("QEMU", qemu)] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(field("Seccomp:"), "2", "{what} runs without the filter");
        assert_eq!(field("NoNewPrivs:"), "1", "{what} runs without NoNewPrivs");
        let bound = u64::from_str_radix(&field("CapBnd:"), 16).expect("CapBnd");
        assert_eq!(
            bound.count_ones() as usize,
            sandbox.bounding_set().len(),
            "{what}'s bounding set is not the unit's"
        );
    }

    // Observing under the sandbox sees what is there: nothing to do.
    let (said, plan) = sandboxed(&[
        OsStr::new("plan"),
        manifests.path().as_os_str(),
        OsStr::new("--detailed-exitcode"),
    ]);
    assert_eq!(
        plan.code,
        Some(0),
        "a plan under the sandbox is not clean ({said})\n{plan}"
    );

    // Removing under the sandbox: the container and the VM go, dnsmasq is stopped.
    let removal = Manifests::new();
    removal.write("bridge.yaml", &bridge(false));
    let (said, prune) = sandboxed(&[
        OsStr::new("apply"),
        removal.path().as_os_str(),
        OsStr::new("--prune"),
    ]);
    assert_eq!(
        prune.code,
        Some(0),
        "removal under the unit's sandbox failed ({said})\n{prune}"
    );
    assert_eq!(
        env.container("web"),
        None,
        "the container is still there\n{prune}"
    );
    assert!(
        !runs(qemu, "gitvisor-vm-vm"),
        "QEMU (pid {qemu}) still runs"
    );
    assert!(
        !runs(dnsmasq_pid, "dnsmasq"),
        "dnsmasq (pid {dnsmasq_pid}) still runs"
    );
}
