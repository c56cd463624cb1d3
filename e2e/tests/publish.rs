//! A container's published port against real runc, the kernel and nftables, in
//! namespaces only: a container on a NAT bridge publishes port 80 (a one-line busybox
//! `nc` server) as the host's port 8080; the "outside" namespace (standing in for the
//! LAN) and the host itself reach it through the host's address. Moving the publication
//! to another host port is an update of the bridge's `nftables` field and leaves the
//! container running as it was; pruning the container removes its DNAT rules.
//!
//! ```text
//!   outside (192.0.2.2/24) ── veth ── up0 (192.0.2.1/24, default route) ─┐
//!                                                               host (gitvisor, runc)
//!   container web (10.0.0.20/24) ─── veth ── bridge brpub (10.0.0.1/24, nat) ─┘
//! ```

use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

use gitvisor_e2e::containers::{ContainerEnv, have};
use gitvisor_e2e::network::{assert_publication_moves_in_place, tcp_read, wait_for_tcp_answer};
use gitvisor_e2e::{
    Manifests, Netns, Outcome, bridge_manifest, non_noop_actions, run_command, skip,
};

const BRIDGE: &str = "brpub";
const HOST_ADDRESS: &str = "192.0.2.1";
const OUTSIDE_ADDRESS: &str = "192.0.2.2";
const ANSWER: &str = "hello-from-web";

/// `ip -n NS ARGS`, which must succeed.
#[track_caller]
fn ip(namespace: &str, args: &[&str]) {
    let mut command = Command::new("ip");
    command.args(["-n", namespace]).args(args);
    run_command(command).expect_code(0);
}

/// Runs `ARGS` in `namespace`.
fn exec(namespace: &str, args: &[&str]) -> Outcome {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace]).args(args);
    run_command(command)
}

/// The outside namespace, linked to the host's `up0`, which carries the host's default
/// route.
fn outside(host: &str) -> Netns {
    let outside = Netns::create("pub-out");
    let name = outside.name();
    ip(
        host,
        &[
            "link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns", name,
        ],
    );
    ip(
        host,
        &["addr", "add", &format!("{HOST_ADDRESS}/24"), "dev", "up0"],
    );
    ip(host, &["link", "set", "up0", "up"]);
    ip(host, &["link", "set", "lo", "up"]);
    ip(host, &["route", "add", "default", "via", OUTSIDE_ADDRESS]);
    ip(
        name,
        &[
            "addr",
            "add",
            &format!("{OUTSIDE_ADDRESS}/24"),
            "dev",
            "out0",
        ],
    );
    ip(name, &["link", "set", "out0", "up"]);
    ip(name, &["link", "set", "lo", "up"]);
    outside
}

/// Waits until the host's `port` answers from `namespace` (the server in the container
/// may still be starting).
#[track_caller]
fn answers(namespace: &str, port: u16) {
    wait_for_tcp_answer(
        namespace,
        HOST_ADDRESS,
        port,
        ANSWER,
        Duration::from_secs(30),
    );
}

/// What a connection from `namespace` to the host's `port` reads.
fn connect(namespace: &str, port: u16) -> Outcome {
    tcp_read(namespace, HOST_ADDRESS, port)
}

fn web(images_rootfs: &str, host_port: u16) -> String {
    ContainerEnv::container_manifest(
        "web",
        &format!(
            "  image: {images_rootfs}\n  command: [nc, -ll, -p, '80', -e, echo, {ANSWER}]\n  stopTimeout: 1s\n  network:\n    bridge: {BRIDGE}\n    address: 10.0.0.20/24\n    gateway: 10.0.0.1\n    publish:\n      - {{hostPort: {host_port}, port: 80}}\n"
        ),
    )
}

/// The comments of the rules in gitvisor's table.
fn gitvisor_rules(host: &str) -> String {
    exec(host, &["nft", "list", "table", "inet", "gitvisor"])
        .expect_code(0)
        .stdout
}

#[test]
fn a_containers_published_port_answers_from_outside_moves_and_is_pruned() {
    let Some((env, images)) = ContainerEnv::new("pub") else {
        return;
    };
    if !have("nft") {
        skip(
            "a_containers_published_port_answers_from_outside_moves_and_is_pruned",
            "needs nft: apt install nftables",
        );
        return;
    }
    let host = env.netns().to_owned();
    let outside = outside(&host);
    let rootfs = images.rootfs.display().to_string();
    let manifests = Manifests::new();
    manifests.write(
        "bridge.yaml",
        &bridge_manifest(BRIDGE, &[], "  addresses: [10.0.0.1/24]\n  nat: true\n"),
    );
    manifests.write("web.yaml", &web(&rootfs, 8080));
    env.apply(manifests.path(), 0);
    assert_eq!(non_noop_actions(&env.plan_json(manifests.path())), []);
    assert!(
        gitvisor_rules(&host).contains("brpub: publish tcp *:8080 -> 10.0.0.20:80"),
        "{}",
        gitvisor_rules(&host)
    );
    answers(outside.name(), 8080);
    answers(&host, 8080);
    let (_, pid) = env.container("web").expect("web runs");

    // Another host port: the bridge's rules change, the container stays as it is.
    manifests.write("web.yaml", &web(&rootfs, 8081));
    assert_publication_moves_in_place(
        &env.plan_json(manifests.path()),
        BRIDGE,
        "tcp *:8081 -> 10.0.0.20:80",
        "Container",
        "web",
    );
    env.apply(manifests.path(), 0);
    assert_eq!(non_noop_actions(&env.plan_json(manifests.path())), []);
    assert_eq!(env.container("web").map(|(_, pid)| pid), Some(pid));
    answers(outside.name(), 8081);
    assert_ne!(
        connect(outside.name(), 8080).code,
        Some(0),
        "the old host port still answers"
    );

    // Pruned with the container: no DNAT rule is left, the port answers no more.
    manifests.remove("web.yaml");
    env.gitvisor([
        OsStr::new("apply"),
        manifests.path().as_os_str(),
        OsStr::new("--prune"),
    ])
    .expect_code(0);
    assert!(env.container("web").is_none());
    let rules = gitvisor_rules(&host);
    assert!(!rules.contains("publish"), "{rules}");
    assert!(!rules.contains("dnat"), "{rules}");
    assert_ne!(connect(outside.name(), 8081).code, Some(0));
    assert_eq!(non_noop_actions(&env.plan_json(manifests.path())), []);
}
