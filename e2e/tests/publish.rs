//! A container's published port against real runc, the kernel and nftables, in
//! namespaces only: a container on a NAT bridge publishes port 80 (a one-line busybox
//! `nc` server) as the host's port 8080; the "outside" namespace (standing in for the
//! LAN) and the host itself reach it through the host's address. Moving the publication
//! to another host port is an update of the bridge's `nftables` field and leaves the
//! container running as it was; pruning the container removes its DNAT rules.
//!
//! A second test: the same port answers on the host's loopback (127.0.0.1:PORT, as Docker
//! users expect), which needs the bridge's `route_localnet` (set by gitvisor, and back off
//! when no publication needs it), and a container with an IPv6 address behind a bridge
//! with IPv6 answers on the host's IPv6 address (ip6 DNAT) but not on [::1].
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

const LOOPBACK_BRIDGE: &str = "brlo";
const HOST_IPV6: &str = "2001:db8::1";
const ANSWER6: &str = "hello-over-ipv6";

/// A container on `LOOPBACK_BRIDGE` at `address` answering `answer` on port 80,
/// published as the host's `host_port`.
fn server(
    name: &str,
    rootfs: &str,
    address: &str,
    gateway: &str,
    answer: &str,
    host_port: u16,
) -> String {
    ContainerEnv::container_manifest(
        name,
        &format!(
            "  image: {rootfs}\n  command: [nc, -ll, -p, '80', -e, echo, {answer}]\n  stopTimeout: 1s\n  network:\n    bridge: {LOOPBACK_BRIDGE}\n    address: {address}\n    gateway: {gateway}\n    publish:\n      - {{hostPort: {host_port}, port: 80}}\n"
        ),
    )
}

/// The bridge's `route_localnet` switch in `namespace`.
fn route_localnet(namespace: &str) -> String {
    exec(
        namespace,
        &[
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{LOOPBACK_BRIDGE}/route_localnet"),
        ],
    )
    .expect_code(0)
    .stdout
    .trim()
    .to_owned()
}

/// What a UDP listener on the host's 127.0.0.1 receives when container `pid` sends it a
/// datagram and then the host itself does. The container does its utmost: its own
/// loopback is down and unrouted, 127.0.0.0/8 goes to the bridge, and its
/// `route_localnet` is on.
fn loopback_datagrams(host: &str, pid: u64) -> String {
    let pid = pid.to_string();
    let in_container = |script: &str| {
        let mut command = Command::new("nsenter");
        command.args(["-t", &pid, "-n", "sh", "-c", script]);
        run_command(command)
    };
    in_container(
        "ip link set lo down; ip route del local 127.0.0.0/8 dev lo table local; ip route del local 127.0.0.1 dev lo table local; ip route add 127.0.0.0/8 via 10.0.0.1 dev eth0 && sysctl -qw net.ipv4.conf.eth0.route_localnet=1 net.ipv4.conf.all.route_localnet=1",
    )
    .expect_code(0);
    let route = in_container("ip route get 127.0.0.1").expect_code(0).stdout;
    assert!(route.contains("dev eth0"), "{route}");
    let listener = std::process::Command::new("ip")
        .args(["netns", "exec", host, "timeout", "20", "python3", "-c"])
        .arg(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('127.0.0.1', 9998))\ns.settimeout(3)\nprint('ready', flush=True)\ntry:\n    while True:\n        print(s.recv(100).decode(), flush=True)\nexcept socket.timeout:\n    pass",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 listens");
    std::thread::sleep(Duration::from_millis(800));
    let send = |from: &str| {
        format!(
            "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'{from}', ('127.0.0.1', 9998))\""
        )
    };
    in_container(&send("from the guest")).expect_code(0);
    std::thread::sleep(Duration::from_millis(300));
    exec(host, &["sh", "-c", &send("from the host")]).expect_code(0);
    let output = listener.wait_with_output().expect("the listener ends");
    let received = String::from_utf8_lossy(&output.stdout);
    assert!(received.starts_with("ready"), "{received}");
    received.lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_published_port_answers_on_the_hosts_loopback_and_an_ipv6_guests_on_the_hosts_ipv6() {
    let name =
        "a_published_port_answers_on_the_hosts_loopback_and_an_ipv6_guests_on_the_hosts_ipv6";
    let Some((env, images)) = ContainerEnv::new("publo") else {
        return;
    };
    if !have("nft") {
        skip(name, "needs nft: apt install nftables");
        return;
    }
    let host = env.netns().to_owned();
    ip(&host, &["link", "set", "lo", "up"]);
    ip(
        &host,
        &["addr", "add", &format!("{HOST_IPV6}/128"), "dev", "lo"],
    );
    let rootfs = images.rootfs.display().to_string();
    let manifests = Manifests::new();
    manifests.write(
        "bridge.yaml",
        &bridge_manifest(
            LOOPBACK_BRIDGE,
            &[],
            "  addresses: [10.0.0.1/24, 'fd00::1/64']\n  nat: true\n",
        ),
    );
    manifests.write(
        "web.yaml",
        &server("web", &rootfs, "10.0.0.20/24", "10.0.0.1", ANSWER, 8080),
    );
    manifests.write(
        "web6.yaml",
        &server("web6", &rootfs, "fd00::20/64", "fd00::1", ANSWER6, 8443),
    );

    // The plan says what the loopback needs: the switch and the rules.
    let plan = env.plan_json(manifests.path());
    let change = gitvisor_e2e::change(&plan, "Bridge", LOOPBACK_BRIDGE);
    let switch = gitvisor_e2e::field(change, "route_localnet").expect("the switch is planned");
    assert_eq!(switch["new"], true, "{plan:#}");
    let rules =
        gitvisor_e2e::field(change, "nftables").expect("the rules are planned")["new"].to_string();
    for rule in [
        "brlo: masquerade published ports reached on the host's loopback",
        "brlo: guard the host's loopback from brlo",
        "brlo: publish tcp *:8080 -> 10.0.0.20:80 (from this host)",
        "brlo: publish tcp *:8443 -> fd00::20:80 (from this host)",
    ] {
        assert!(rules.contains(rule), "{rule}: {plan:#}");
    }

    env.apply(manifests.path(), 0);
    assert_eq!(non_noop_actions(&env.plan_json(manifests.path())), []);
    assert_eq!(route_localnet(&host), "1");
    wait_for_tcp_answer(&host, "127.0.0.1", 8080, ANSWER, Duration::from_secs(30));
    wait_for_tcp_answer(&host, "10.0.0.1", 8080, ANSWER, Duration::from_secs(5));
    wait_for_tcp_answer(&host, HOST_IPV6, 8443, ANSWER6, Duration::from_secs(30));
    // Nothing from the IPv6 loopback can leave it: [::1] is not published.
    assert_ne!(tcp_read(&host, "::1", 8443).code, Some(0));

    // The bridge routes 127.0.0.0/8 now; a guest doing all it can to reach the host's
    // loopback services through it is still dropped.
    let (_, web) = env.container("web").expect("web runs");
    assert_eq!(
        loopback_datagrams(&host, web),
        "from the host",
        "only the host's own datagram reaches its loopback"
    );

    // Pruned with its containers (the bridge stays): the rules go and the switch is
    // back off.
    manifests.remove("web.yaml");
    manifests.remove("web6.yaml");
    env.gitvisor([
        OsStr::new("apply"),
        manifests.path().as_os_str(),
        OsStr::new("--prune"),
    ])
    .expect_code(0);
    assert_eq!(route_localnet(&host), "0");
    let rules = gitvisor_rules(&host);
    assert!(!rules.contains("127.0.0.0"), "{rules}");
    assert!(!rules.contains("dnat"), "{rules}");
    assert_ne!(tcp_read(&host, "127.0.0.1", 8080).code, Some(0));
    assert_eq!(non_noop_actions(&env.plan_json(manifests.path())), []);
}
