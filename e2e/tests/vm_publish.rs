//! A VM's published port against QEMU (TCG), the kernel's nftables and dnsmasq, in
//! namespaces only: a VM on a NAT bridge gets its static lease by DHCP (busybox `udhcpc`
//! in the test guest, `gv.dhcp=1`) and answers on port 80 (a busybox `nc` server,
//! `gv.listen=80`); its NIC publishes that port as the host's port 8080, which the
//! "outside" namespace (standing in for the LAN) and the host itself reach through the
//! host's address. Moving the publication to another host port is an in-place update of
//! the bridge's `nftables` field and leaves the same QEMU process running; pruning the VM
//! removes its DNAT rules. `status` shows the VM's leased address and uptime, beside a
//! controller too.
//!
//! ```text
//!   outside (192.0.2.2/24) ── veth ── up0 (192.0.2.1/24, default route) ─┐
//!                                                    host (gitvisor, dnsmasq, QEMU)
//!   VM web (eth0, leased 10.0.0.10) ── tap ── bridge brvm (10.0.0.1/24, nat, dhcp) ─┘
//! ```
//!
//! One guest boots once (a boot costs seconds under TCG) and every step runs against it.

use std::ffi::OsStr;
use std::time::Duration;

use gitvisor_e2e::controller::Controller;
use gitvisor_e2e::network::{
    HOST_UPLINK_ADDRESS, Lab, assert_publication_moves_in_place, tcp_read, wait_for_tcp_answer,
};
use gitvisor_e2e::vms::{self, GuestImage, VmGuard, vm_manifest};
use gitvisor_e2e::{Manifests, Outcome, TestEnv, bridge_manifest, non_noop_actions, skip};

/// How long a boot to a marker may take on a loaded 2-core machine under TCG (as in
/// `e2e/tests/vms.rs`).
const BOOT: Duration = Duration::from_secs(240);
const BRIDGE: &str = "brvm";
const MAC: &str = "52:54:00:00:00:10";
const LEASE: &str = "10.0.0.10";
/// What the guest's server answers: its marker and its leased address.
const ANSWER: &str = "GV-WEB 10.0.0.10";

fn bridge() -> String {
    bridge_manifest(
        BRIDGE,
        &[],
        &format!(
            "  addresses: [10.0.0.1/24]\n  nat: true\n  dhcp:\n    range: 10.0.0.100-10.0.0.199\n    static:\n      - {{mac: '{MAC}', address: {LEASE}, name: web}}\n"
        ),
    )
}

fn web(image: &GuestImage, host_port: u16) -> String {
    vm_manifest(
        "web",
        &format!(
            "cpus: 1\nmemory: 256MiB\naccel: tcg\nshutdownTimeout: 1s\n\
             boot:\n  kernel: {}\n  initrd: {}\n  cmdline: console=ttyS0 quiet gv.dhcp=1 gv.listen=80\n\
             networks:\n  - bridge: {BRIDGE}\n    mac: '{MAC}'\n    publish:\n      - {{hostPort: {host_port}, port: 80}}\n",
            image.kernel.display(),
            image.initrd.display(),
        ),
    )
}

/// What a connection from `namespace` to the host's `port` reads.
fn connect(namespace: &str, port: u16) -> Outcome {
    tcp_read(namespace, HOST_UPLINK_ADDRESS, port)
}

/// Waits until the host's `port` answers the guest's marker from `namespace`.
#[track_caller]
fn answers(namespace: &str, port: u16) {
    wait_for_tcp_answer(namespace, HOST_UPLINK_ADDRESS, port, ANSWER, BOOT);
}

/// gitvisor's table in the host namespace.
fn gitvisor_rules(lab: &Lab) -> String {
    lab.nft(&["list", "table", "inet", "gitvisor"])
        .expect_code(0)
        .stdout
}

#[track_caller]
fn assert_plan_clean(env: &TestEnv, manifests: &Manifests) {
    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(outcome.code, Some(0), "expected a clean plan\n{outcome}");
}

#[test]
fn a_vms_published_port_answers_from_outside_moves_without_a_restart_and_is_pruned() {
    let test = "a_vms_published_port_answers_from_outside_moves_without_a_restart_and_is_pruned";
    let Some(env) = TestEnv::new("vm-pub") else {
        return;
    };
    if let Some(why) = vms::missing_facility() {
        skip(&gitvisor_e2e::current_test_name(test), &why);
        return;
    }
    let image = vms::guest_image().expect("cannot build the guest's initramfs");
    let guard = VmGuard::new(&env);
    // Dropped first: kills what runs in the namespaces (QEMU, dnsmasq) and deletes them.
    let Some(mut lab) = Lab::new(&env) else {
        return;
    };
    let outside = lab.outside();
    let host = lab.host().to_owned();

    let manifests = Manifests::new();
    manifests.write("bridge.yaml", &bridge());
    manifests.write("web.yaml", &web(&image, 8080));
    env.apply(manifests.path()).expect_code(0);
    assert_plan_clean(&env, &manifests);
    let rules = gitvisor_rules(&lab);
    assert!(
        rules.contains(&format!("{BRIDGE}: publish tcp *:8080 -> {LEASE}:80")),
        "{rules}"
    );

    // The guest gets its static lease by DHCP and serves port 80 on it.
    let serial = guard.serial("web");
    let lease = serial.wait_for("GV-DHCP-", 0, BOOT);
    assert_eq!(lease, format!("GV-DHCP-OK {LEASE}"), "{}", serial.text());
    serial.wait_for("GV-LISTEN 80", 0, BOOT);
    let pid = guard.pid("web").expect("the guest runs");

    // `status` shows the VM's address, from dnsmasq's lease for its MAC, and its uptime.
    let status = env.status_json();
    let listed = status["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "VirtualMachine" && r["name"] == "web")
        .expect("the VM in status");
    let note = listed["liveNote"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!("power: running (pid {pid}, up "))
            && note.ends_with(&format!("; address: {LEASE} on {BRIDGE}")),
        "{listed}"
    );
    let text = env.gitvisor(["status"]).expect_code(0).stdout;
    assert!(
        text.contains(&format!("address: {LEASE} on {BRIDGE}")),
        "{text}"
    );
    // The same beside a controller, in its `observedNote`.
    let (mut controller, _) =
        Controller::start(&env, &["--source", manifests.path_str(), "--resync", "1h"]);
    let status = env.status_json();
    assert!(
        status["pid"].is_number(),
        "the controller answered: {status:#}"
    );
    let listed = status["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "VirtualMachine" && r["name"] == "web")
        .expect("the VM in the controller's status");
    let note = listed["observedNote"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("pid {pid}, up "))
            && note.ends_with(&format!("; address: {LEASE} on {BRIDGE}")),
        "{listed}"
    );
    assert!(controller.terminate().success());
    assert_eq!(
        guard.pid("web"),
        Some(pid),
        "the guest outlives the controller"
    );

    // From the outside, from the host itself (hairpin through `output`), and on the
    // host's loopback (through the bridge's `route_localnet`).
    answers(&outside, 8080);
    answers(&host, 8080);
    env.ip(["link", "set", "lo", "up"]);
    wait_for_tcp_answer(&host, "127.0.0.1", 8080, ANSWER, BOOT);

    // Another host port: the bridge's rules change in place, the VM is not touched.
    manifests.write("web.yaml", &web(&image, 8081));
    assert_publication_moves_in_place(
        &env.plan_json(manifests.path()),
        BRIDGE,
        &format!("tcp *:8081 -> {LEASE}:80"),
        "VirtualMachine",
        "web",
    );
    env.apply(manifests.path()).expect_code(0);
    assert_plan_clean(&env, &manifests);
    assert_eq!(guard.pid("web"), Some(pid), "the VM was restarted");
    answers(&outside, 8081);
    answers(&host, 8081);
    assert_ne!(
        connect(&outside, 8080).code,
        Some(0),
        "the old host port still answers"
    );
    assert_eq!(
        serial.lines_starting("GV-BOOT-OK").len(),
        1,
        "the guest booted again\n{}",
        serial.text()
    );

    // Pruned with the VM: no DNAT rule is left, the port answers no more; the bridge
    // keeps its NAT.
    manifests.remove("web.yaml");
    env.gitvisor([
        OsStr::new("apply"),
        manifests.path().as_os_str(),
        OsStr::new("--prune"),
    ])
    .expect_code(0);
    assert_eq!(guard.pid("web"), None);
    let rules = gitvisor_rules(&lab);
    assert!(!rules.contains("publish"), "{rules}");
    assert!(!rules.contains("dnat"), "{rules}");
    assert!(rules.contains("masquerade"), "{rules}");
    assert_ne!(connect(&outside, 8081).code, Some(0));
    assert_eq!(non_noop_actions(&env.plan_json(manifests.path())), []);
}
