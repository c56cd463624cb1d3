//! Network modes of managed bridges against the real kernel, nftables and dnsmasq, in
//! namespaces only (see `gitvisor_e2e::network` for the lab): NAT out of the host with
//! the host's address as the source; a published port reached from the outside and from
//! the host; drift of gitvisor's table (a rule deleted, the table flushed) planned and
//! repaired; an admin's own table byte-identical through apply, repair and prune; DHCP
//! with a static lease and names resolving between guests, both leases listed by
//! `status`, a killed dnsmasq started again, everything removed by prune; a host-only bridge that reaches the host and
//! nothing beyond, even with forwarding on; every rule edited by hand under its comment
//! planned as drift and repaired; traffic the host routes back into a NAT subnet keeping
//! its source; the golden rules listed back by the real `nft`; two gitvisors sharing the
//! table, one pruning without touching the other's rules or the uplink forwarding the
//! other's NAT needs; the layout before instance ids
//! migrated; and an apply killed with SIGKILL part-way.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use gitvisor_e2e::network::{HOST_UPLINK_ADDRESS, Lab, OUTSIDE_ADDRESS, UPLINK};
use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, change, field};

/// A Bridge manifest whose `spec:` is `spec` (written without indentation).
fn bridge(name: &str, spec: &str) -> String {
    let indented: String = spec.lines().map(|line| format!("  {line}\n")).collect();
    bridge_manifest(name, &[], &indented)
}

/// A bridged bridge that stays declared, so pruning the others is not "delete
/// everything" (and it needs no nftables rules).
fn keeper(lab: &Lab, manifests: &Manifests) {
    lab.ip(
        lab.host(),
        &[
            "link", "add", "keep0", "type", "veth", "peer", "name", "keep1",
        ],
    );
    manifests.write("keep.yaml", &bridge("keep", "ports: [keep0]"));
}

/// An admin's own table in the host namespace, with rules and a counter.
fn admin_table(lab: &Lab) -> String {
    lab.nft(&["add", "table", "inet", "filter"]).expect_code(0);
    lab.nft(&[
        "add",
        "chain",
        "inet",
        "filter",
        "input",
        "{ type filter hook input priority 0; policy accept; }",
    ])
    .expect_code(0);
    lab.nft(&[
        "add", "rule", "inet", "filter", "input", "tcp", "dport", "22", "accept",
    ])
    .expect_code(0);
    lab.nft(&[
        "add",
        "chain",
        "inet",
        "filter",
        "forward",
        "{ type filter hook forward priority 10; policy accept; }",
    ])
    .expect_code(0);
    lab.nft(&[
        "add", "rule", "inet", "filter", "forward", "udp", "dport", "9", "drop",
    ])
    .expect_code(0);
    admin_listing(lab)
}

fn admin_listing(lab: &Lab) -> String {
    lab.nft(&["-a", "list", "table", "inet", "filter"])
        .expect_code(0)
        .stdout
}

#[track_caller]
fn assert_plan_clean(env: &TestEnv, manifests: &Manifests) {
    env.plan_detailed(manifests.path()).expect_code(0);
}

fn apply(env: &TestEnv, manifests: &Path) {
    env.gitvisor([
        OsStr::new("apply"),
        manifests.as_os_str(),
        OsStr::new("--prune"),
    ])
    .expect_code(0);
}

/// The handle of the rule with `comment` in gitvisor's table.
fn handle_of(lab: &Lab, comment: &str) -> (String, String) {
    let listing = lab
        .nft(&["-a", "list", "table", "inet", "gitvisor"])
        .expect_code(0)
        .stdout;
    let mut chain = String::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("chain ") {
            chain = name
                .trim_end_matches(" {")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
        }
        if line.contains(&format!("comment \"{comment}\"")) {
            let handle = line
                .rsplit("# handle ")
                .next()
                .unwrap_or_default()
                .to_owned();
            return (chain, handle);
        }
    }
    panic!("no rule {comment:?} in\n{listing}");
}

/// The source address the outside's server saw for a request from `guest`.
fn source_seen_outside(lab: &Lab, guest: &str) -> Result<String, String> {
    lab.http_get(guest, OUTSIDE_ADDRESS, 80, "/cgi-bin/ip")
        .map_err(|outcome| outcome.to_string())
}

const NAT_BRIDGE: &str = "addresses: [10.0.0.1/24]
nat: true
publish:
  - {address: 10.0.0.10, hostPort: 8080, port: 80}";

#[test]
fn nat_published_ports_drift_and_prune_leave_the_admins_table_alone() {
    let Some(env) = TestEnv::new("net-nat") else {
        return;
    };
    let Some(mut lab) = Lab::new(&env) else {
        return;
    };
    let outside = lab.outside();
    let guest = lab.guest("g1", None);
    let admin = admin_table(&lab);
    let manifests = Manifests::new();
    keeper(&lab, &manifests);
    manifests.write("br0.yaml", &bridge("br0", NAT_BRIDGE));

    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    lab.attach("g1", "br0");
    lab.address(&guest, "10.0.0.10/24", "10.0.0.1");
    assert_eq!(lab.forwarding("br0"), "1");
    assert_eq!(lab.forwarding(UPLINK), "1", "the uplink forwards");
    assert_eq!(lab.forwarding("all"), "0", "never the global switch");

    // NAT: the guest reaches the outside, which sees the host's address.
    assert!(
        lab.pings(&guest, OUTSIDE_ADDRESS),
        "the guest cannot ping the outside"
    );
    lab.serve(&outside, OUTSIDE_ADDRESS, 80, "outside");
    assert_eq!(
        source_seen_outside(&lab, &guest).as_deref(),
        Ok(HOST_UPLINK_ADDRESS)
    );

    // A published port answers from the outside and from the host itself.
    lab.serve(&guest, "0.0.0.0", 80, "hello from the guest");
    let published = |namespace: &str| {
        lab.http_get(namespace, HOST_UPLINK_ADDRESS, 8080, "/")
            .unwrap_or_else(|outcome| panic!("the published port did not answer\n{outcome}"))
    };
    assert_eq!(published(&outside), "hello from the guest");
    assert_eq!(
        published(lab.host()),
        "hello from the guest",
        "hairpin from the host"
    );
    assert_eq!(
        admin_listing(&lab),
        admin,
        "apply changed the admin's table"
    );

    // Drift: a rule deleted by hand.
    let (chain, handle) = handle_of(&lab, "br0: masquerade 10.0.0.0/24");
    lab.nft(&[
        "delete", "rule", "inet", "gitvisor", &chain, "handle", &handle,
    ])
    .expect_code(0);
    assert!(
        source_seen_outside(&lab, &guest).is_err(),
        "without the masquerade rule the outside cannot answer"
    );
    let plan = env.plan_json(manifests.path());
    let br0 = change(&plan, "Bridge", "br0");
    assert_eq!(br0["action"], "update", "{plan:#}");
    assert_eq!(
        field(br0, "nftables").expect("nftables field")["new"],
        serde_json::json!(["br0: masquerade 10.0.0.0/24"]),
        "{plan:#}"
    );
    assert_eq!(change(&plan, "Bridge", "keep")["action"], "noop");
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    assert_eq!(
        source_seen_outside(&lab, &guest).as_deref(),
        Ok(HOST_UPLINK_ADDRESS)
    );

    // Drift: the table flushed.
    lab.nft(&["flush", "table", "inet", "gitvisor"])
        .expect_code(0);
    let plan = env.plan_json(manifests.path());
    assert_eq!(
        change(&plan, "Bridge", "br0")["action"],
        "update",
        "{plan:#}"
    );
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    assert_eq!(published(&outside), "hello from the guest");
    assert_eq!(
        admin_listing(&lab),
        admin,
        "the repair changed the admin's table"
    );

    // Prune the last NAT bridge: the table goes, the uplink is given back, the admin's
    // table stays byte for byte.
    manifests.remove("br0.yaml");
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    let gone = lab.nft(&["list", "table", "inet", "gitvisor"]);
    assert_ne!(
        gone.code,
        Some(0),
        "the table outlived the last NAT bridge\n{gone}"
    );
    assert_eq!(
        lab.forwarding(UPLINK),
        "0",
        "the uplink's forwarding was not given back"
    );
    assert_eq!(
        admin_listing(&lab),
        admin,
        "prune changed the admin's table"
    );
}

const DHCP_BRIDGE: &str = "addresses: [10.0.0.1/24]
dhcp:
  range: 10.0.0.100-10.0.0.199
  leaseTime: 10m
  domain: lab
  static:
    - {mac: '52:54:00:00:00:10', address: 10.0.0.10, name: vm1}";

#[test]
fn dhcp_serves_static_leases_names_resolve_and_a_dead_dnsmasq_comes_back() {
    let Some(env) = TestEnv::new("net-dhcp") else {
        return;
    };
    let Some(mut lab) = Lab::new(&env) else {
        return;
    };
    let vm1 = lab.guest("g1", Some("52:54:00:00:00:10"));
    let other = lab.guest("g2", Some("52:54:00:00:00:20"));
    let manifests = Manifests::new();
    keeper(&lab, &manifests);
    manifests.write("br0.yaml", &bridge("br0", DHCP_BRIDGE));
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    lab.attach("g1", "br0");
    lab.attach("g2", "br0");
    assert_eq!(lab.dnsmasq_pids().len(), 1, "one dnsmasq for the bridge");

    assert_eq!(
        lab.dhcp(&vm1).map_err(|o| o.to_string()),
        Ok("10.0.0.10".to_owned())
    );
    let dynamic = lab.dhcp(&other).unwrap_or_else(|o| panic!("no lease\n{o}"));
    assert!(
        dynamic.starts_with("10.0.0.1"),
        "{dynamic} is outside the range"
    );
    let answer = lab.exec(&other, ["busybox", "nslookup", "vm1.lab", "10.0.0.1"]);
    assert!(
        answer.stdout.contains("10.0.0.10"),
        "vm1.lab does not resolve\n{answer}"
    );

    // `status` lists both leases of br0, in JSON and in text.
    let status = env.status_json();
    let leases = status["dhcpLeases"]["br0"]
        .as_array()
        .unwrap_or_else(|| panic!("no leases of br0 in status\n{status:#}"));
    let lease_of = |mac: &str| {
        leases
            .iter()
            .find(|lease| lease["mac"] == mac)
            .unwrap_or_else(|| panic!("no lease for {mac} in status\n{status:#}"))
    };
    assert_eq!(lease_of("52:54:00:00:00:10")["address"], "10.0.0.10");
    assert_eq!(lease_of("52:54:00:00:00:10")["hostname"], "vm1");
    assert!(lease_of("52:54:00:00:00:10")["expiresUnix"].as_u64() > Some(0));
    assert_eq!(lease_of("52:54:00:00:00:20")["address"], dynamic.as_str());
    let text = env.gitvisor(["status"]).expect_code(0).stdout;
    assert!(
        text.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.starts_with(&["br0", "52:54:00:00:00:10", "10.0.0.10", "vm1"])
        }),
        "status does not list the static lease\n{text}"
    );

    // dnsmasq dies: plan says so, apply starts it again.
    let pid = lab.dnsmasq_pids()[0];
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.dnsmasq_pids().contains(&pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let plan = env.plan_json(manifests.path());
    let br0 = change(&plan, "Bridge", "br0");
    assert_eq!(br0["action"], "update", "{plan:#}");
    assert_eq!(
        field(br0, "dhcp").expect("dhcp field")["old"],
        "stopped",
        "{plan:#}"
    );
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    let restarted = lab.dnsmasq_pids();
    assert_eq!(restarted.len(), 1);
    assert_ne!(restarted[0], pid);
    let answer = lab.exec(&other, ["busybox", "nslookup", "vm1.lab", "10.0.0.1"]);
    assert!(answer.stdout.contains("10.0.0.10"), "{answer}");

    // Prune: dnsmasq and its files go.
    manifests.remove("br0.yaml");
    apply(&env, manifests.path());
    assert!(lab.dnsmasq_pids().is_empty(), "dnsmasq outlived its bridge");
    assert_plan_clean(&env, &manifests);
}

#[test]
fn a_host_only_bridge_reaches_the_host_and_nothing_beyond() {
    let Some(env) = TestEnv::new("net-iso") else {
        return;
    };
    let Some(mut lab) = Lab::new(&env) else {
        return;
    };
    let outside = lab.outside();
    lab.ip(
        &outside,
        &["route", "add", "10.9.0.0/24", "via", HOST_UPLINK_ADDRESS],
    );
    // The host namespace forwards (as a host running Docker does): isolation must come
    // from gitvisor's rules, not from forwarding being off.
    lab.sysctl("net/ipv4/ip_forward", "1");
    let guest = lab.guest("g1", None);
    let manifests = Manifests::new();
    manifests.write("lab.yaml", &bridge("lab", "addresses: [10.9.0.1/24]"));
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    lab.attach("g1", "lab");
    lab.address(&guest, "10.9.0.10/24", "10.9.0.1");

    assert!(
        lab.pings(&guest, "10.9.0.1"),
        "the guest cannot reach the host"
    );
    assert!(
        !lab.pings(&guest, OUTSIDE_ADDRESS),
        "a host-only guest reached the outside"
    );

    // Without gitvisor's rules and switch the same guest does get out: the test can fail.
    lab.nft(&["delete", "table", "inet", "gitvisor"])
        .expect_code(0);
    lab.sysctl("net/ipv4/conf/lab/forwarding", "1");
    assert!(
        lab.pings(&guest, OUTSIDE_ADDRESS),
        "the lab's path out is broken"
    );
    let plan = env.plan_json(manifests.path());
    let change = change(&plan, "Bridge", "lab");
    assert_eq!(change["action"], "update", "{plan:#}");
    assert!(field(change, "nftables").is_some() && field(change, "forwarding.lab").is_some());
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    assert!(
        !lab.pings(&guest, OUTSIDE_ADDRESS),
        "the repair did not isolate the guest"
    );
    assert!(lab.pings(&guest, "10.9.0.1"));
}

/// Every rule of gitvisor's table as `nft -a list` prints it: chain, handle, and the
/// rule's text without its handle.
fn listed_rules(lab: &Lab) -> Vec<(String, String, String)> {
    let listing = lab
        .nft(&["-a", "list", "table", "inet", "gitvisor"])
        .expect_code(0)
        .stdout;
    let mut chain = String::new();
    let mut rules = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("chain ") {
            chain = name.split_whitespace().next().unwrap_or("").to_owned();
        } else if let Some((body, handle)) = line.split_once(" # handle ")
            && body.contains("comment \"")
        {
            rules.push((chain.clone(), handle.to_owned(), body.to_owned()));
        }
    }
    rules
}

/// What an admin might do to a rule while keeping its comment: a drop turned into an
/// accept, an accept into a drop, a masquerade widened (to every destination, or to
/// everything), a DNAT sent elsewhere, a jump turned into an accept.
fn hand_edit(body: &str) -> String {
    let (matches, comment) = body.split_once(" comment \"").expect("a commented rule");
    let edited = if matches.ends_with(" drop") {
        matches.replace(" drop", " accept")
    } else if matches.starts_with("jump ") {
        "accept".to_owned()
    } else if matches.contains("ip daddr != ") && matches.ends_with("masquerade") {
        let mut words: Vec<&str> = matches.split(' ').collect();
        let at = words
            .windows(3)
            .position(|w| w == ["ip", "daddr", "!="])
            .expect("the daddr match");
        words.drain(at..at + 4);
        words.join(" ")
    } else if matches.ends_with("masquerade") {
        "masquerade".to_owned()
    } else if matches.contains(" dnat ip") {
        format!("{matches}1")
    } else if matches.ends_with(" accept") {
        matches.replace(" accept", " drop")
    } else {
        panic!("no hand edit for {body}")
    };
    assert_ne!(edited, matches);
    format!("{edited} comment \"{comment}")
}

#[test]
fn every_rule_edited_by_hand_under_its_comment_is_drift_that_apply_repairs() {
    let Some(env) = TestEnv::new("net-edit") else {
        return;
    };
    let Some(lab) = Lab::new(&env) else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("br0.yaml", &bridge("br0", NAT_BRIDGE));
    manifests.write("iso.yaml", &bridge("iso", "addresses: [10.9.0.1/24]"));
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);

    let rules = listed_rules(&lab);
    assert!(rules.len() >= 13, "{rules:#?}");
    for (chain, _, body) in rules {
        // Each repair rewrites the chain: the rule's handle is read again.
        let (_, handle, _) = listed_rules(&lab)
            .into_iter()
            .find(|(c, _, b)| c == &chain && b == &body)
            .expect("the rule is there");
        let edited = hand_edit(&body);
        let replace = format!("replace rule inet gitvisor {chain} handle {handle} {edited}");
        lab.nft(&[replace.as_str()]).expect_code(0);
        let comment = body
            .split_once(" comment \"")
            .map(|(_, c)| c.trim_end_matches('"'))
            .expect("a comment");
        let bridge = comment.split(':').next().expect("the bridge");
        let plan = env.plan_json(manifests.path());
        let change = change(&plan, "Bridge", bridge);
        assert_eq!(change["action"], "update", "{edited}: {plan:#}");
        // The plan may label the rule after its comment (a publication's two DNAT rules
        // are "(arriving)" and "(from this host)").
        let old = &field(change, "nftables").expect("an nftables field")["old"];
        let listed: Vec<&str> = old
            .as_array()
            .map(|rules| rules.iter().filter_map(|rule| rule.as_str()).collect())
            .unwrap_or_default();
        assert!(
            matches!(listed.as_slice(), [rule] if rule.starts_with(comment)
                && rule.ends_with(" (edited by hand)")),
            "{edited}: {plan:#}"
        );
        apply(&env, manifests.path());
        assert_plan_clean(&env, &manifests);
        assert!(
            listed_rules(&lab).iter().any(|(_, _, b)| b == &body),
            "{body} was not restored"
        );
    }
}

/// The rules of gitvisor's table whose comment starts with `prefix`, as `nft list`
/// prints them without handles, sorted.
fn rules_of(lab: &Lab, prefix: &str) -> Vec<String> {
    let mut rules: Vec<String> = listed_rules(lab)
        .into_iter()
        .filter(|(_, _, body)| body.contains(&format!("comment \"{prefix}")))
        .map(|(chain, _, body)| format!("{chain}: {body}"))
        .collect();
    rules.sort();
    rules
}

#[test]
fn one_gitvisor_pruning_its_last_rules_leaves_another_gitvisors_rules_alone() {
    let Some(env) = TestEnv::new("net-two") else {
        return;
    };
    let Some(lab) = Lab::new(&env) else {
        return;
    };
    // A second gitvisor in the same namespace, with its own state and run dirs.
    let b_state = tempfile::tempdir().expect("state dir");
    let b_run = tempfile::tempdir().expect("run dir");
    let b = |args: &[&OsStr]| {
        gitvisor_e2e::run_command(env.other_gitvisor_command(b_state.path(), b_run.path(), args))
    };
    let a_manifests = Manifests::new();
    keeper(&lab, &a_manifests);
    a_manifests.write(
        "nat.yaml",
        &bridge("bra", "addresses: [10.5.0.1/24]\nnat: true"),
    );
    let b_manifests = Manifests::new();
    lab.ip(
        lab.host(),
        &[
            "link", "add", "bkeep0", "type", "veth", "peer", "name", "bkeep1",
        ],
    );
    b_manifests.write("keep.yaml", &bridge("bkeep", "ports: [bkeep0]"));
    b_manifests.write("br0.yaml", &bridge("br0", NAT_BRIDGE));
    b_manifests.write("iso.yaml", &bridge("iso", "addresses: [10.9.0.1/24]"));
    let apply_b = || {
        b(&[
            OsStr::new("apply"),
            b_manifests.path().as_os_str(),
            OsStr::new("--prune"),
        ])
        .expect_code(0)
    };

    apply(&env, a_manifests.path());
    apply_b();
    assert_plan_clean(&env, &a_manifests);
    let b_rules = [rules_of(&lab, "br0:"), rules_of(&lab, "iso:")].concat();
    assert!(b_rules.len() >= 11, "{b_rules:#?}");
    assert!(!rules_of(&lab, "bra:").is_empty());

    // A's last NAT bridge goes: A's rules with it, B's stay byte for byte.
    a_manifests.remove("nat.yaml");
    apply(&env, a_manifests.path());
    assert!(
        rules_of(&lab, "bra:").is_empty(),
        "A's rules outlived its bridge"
    );
    assert_eq!(
        [rules_of(&lab, "br0:"), rules_of(&lab, "iso:")].concat(),
        b_rules,
        "pruning A's bridge changed B's rules"
    );
    assert_plan_clean(&env, &a_manifests);
    b(&[
        OsStr::new("plan"),
        b_manifests.path().as_os_str(),
        OsStr::new("--detailed-exitcode"),
    ])
    .expect_code(0);

    // B's last go too: nothing of anyone's is left, and the table goes.
    b_manifests.remove("br0.yaml");
    b_manifests.remove("iso.yaml");
    apply_b();
    let gone = lab.nft(&["list", "table", "inet", "gitvisor"]);
    assert_ne!(gone.code, Some(0), "the empty table stayed\n{gone}");
}

#[test]
fn one_gitvisor_pruning_its_last_nat_bridge_leaves_the_uplink_forwarding_another_needs() {
    let Some(env) = TestEnv::new("net-two-fwd") else {
        return;
    };
    let Some(mut lab) = Lab::new(&env) else {
        return;
    };
    let b_state = tempfile::tempdir().expect("state dir");
    let b_run = tempfile::tempdir().expect("run dir");
    let b = |args: &[&OsStr]| {
        gitvisor_e2e::run_command(env.other_gitvisor_command(b_state.path(), b_run.path(), args))
    };
    let _outside = lab.outside();
    let guest = lab.guest("g1", None);
    // A turns the uplink's forwarding on (and records it); B finds it on.
    assert_eq!(lab.forwarding(UPLINK), "0");
    let a_manifests = Manifests::new();
    keeper(&lab, &a_manifests);
    a_manifests.write(
        "nat.yaml",
        &bridge("bra", "addresses: [10.5.0.1/24]\nnat: true"),
    );
    apply(&env, a_manifests.path());
    assert_eq!(lab.forwarding(UPLINK), "1", "A turned the uplink on");
    let b_manifests = Manifests::new();
    b_manifests.write(
        "br0.yaml",
        &bridge("br0", "addresses: [10.0.0.1/24]\nnat: true"),
    );
    b(&[OsStr::new("apply"), b_manifests.path().as_os_str()]).expect_code(0);
    lab.attach("g1", "br0");
    lab.address(&guest, "10.0.0.10/24", "10.0.0.1");
    assert!(
        lab.pings(&guest, OUTSIDE_ADDRESS),
        "B's NAT does not forward"
    );

    // A's last NAT bridge goes while B's NAT still routes out of the uplink: the switch
    // stays on and B's guest still reaches the outside.
    a_manifests.remove("nat.yaml");
    let plan = env.plan_json(a_manifests.path());
    let change = change(&plan, "Bridge", "bra");
    assert!(
        field(change, &format!("forwarding.{UPLINK}")).is_none(),
        "A plans to turn off the uplink B needs: {plan:#}"
    );
    apply(&env, a_manifests.path());
    assert_eq!(
        lab.forwarding(UPLINK),
        "1",
        "A turned off the uplink forwarding B's NAT needs"
    );
    assert!(
        lab.pings(&guest, OUTSIDE_ADDRESS),
        "B's NAT stopped forwarding when A pruned its bridge"
    );
    assert_plan_clean(&env, &a_manifests);
    b(&[
        OsStr::new("plan"),
        b_manifests.path().as_os_str(),
        OsStr::new("--detailed-exitcode"),
    ])
    .expect_code(0);
}

#[test]
fn rules_of_the_layout_before_instance_ids_are_migrated_and_others_left_alone() {
    let Some(env) = TestEnv::new("net-legacy") else {
        return;
    };
    let Some(lab) = Lab::new(&env) else {
        return;
    };
    // The layout gitvisor wrote before instance ids, for the bridge `lab`, and the same
    // for a bridge `other` this gitvisor neither declares nor owns.
    let script = lab.files().join("legacy.nft");
    std::fs::write(
        &script,
        r#"table inet gitvisor {
  chain managed-by-gitvisor {
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
  }
  chain lab-fwd {
    iifname "lab" drop comment "lab: isolate, nothing forwarded from lab"
  }
  chain other-fwd {
    iifname "other" drop comment "other: isolate, nothing forwarded from other"
  }
}
add rule inet gitvisor forward jump lab-fwd comment "lab: jump lab-fwd"
add rule inet gitvisor forward jump other-fwd comment "other: jump other-fwd"
"#,
    )
    .expect("write the legacy layout");
    lab.nft(&["-f", &script.to_string_lossy()]).expect_code(0);
    let manifests = Manifests::new();
    manifests.write("lab.yaml", &bridge("lab", "addresses: [10.9.0.1/24]"));

    let plan = env.plan_json(manifests.path());
    let rules = field(change(&plan, "Bridge", "lab"), "nftables").expect("nftables field");
    assert!(
        rules["old"]
            .to_string()
            .contains("lab: isolate, nothing forwarded from lab (layout before instance ids)"),
        "{plan:#}"
    );
    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    let rules = listed_rules(&lab);
    let chains: Vec<&str> = rules.iter().map(|(chain, _, _)| chain.as_str()).collect();
    assert!(!chains.contains(&"lab-fwd"), "{rules:#?}");
    assert!(
        rules.iter().any(|(chain, _, body)| chain == "forward"
            && body == r#"jump other-fwd comment "other: jump other-fwd""#),
        "other's legacy jump is not this gitvisor's: {rules:#?}"
    );
    assert!(
        !rules
            .iter()
            .any(|(_, _, body)| body.contains("lab: jump lab-fwd")),
        "{rules:#?}"
    );
    assert!(
        rules.iter().any(|(chain, _, body)| chain.starts_with("gv")
            && chain.ends_with("-lab-fwd")
            && body.contains("lab: isolate, nothing forwarded from lab")),
        "lab's rules under the instance id: {rules:#?}"
    );
    assert_eq!(
        rules_of(&lab, "other:").len(),
        2,
        "other's legacy chain and jump stay"
    );
}

/// A guest on `bridge` whose address is a /32: everything it sends, even to a
/// neighbour in the bridge's subnet, goes through the host (`gateway`), as with a
/// point-to-point setup.
fn routed_guest(lab: &mut Lab, host_side: &str, bridge: &str, address: &str) -> String {
    let guest = lab.guest(host_side, None);
    lab.attach(host_side, bridge);
    lab.ip(
        &guest,
        &["addr", "add", &format!("{address}/32"), "dev", "eth0"],
    );
    lab.ip(&guest, &["route", "add", "10.0.0.1", "dev", "eth0"]);
    lab.ip(&guest, &["route", "add", "default", "via", "10.0.0.1"]);
    guest
}

#[test]
fn traffic_the_host_routes_back_into_the_subnet_keeps_its_source_address() {
    // The masquerade rule matches `ip daddr != <subnet>`: a packet from one guest to
    // another of the same subnet that the host routes is not rewritten. Without that
    // match the neighbour would see the bridge's address instead of the guest's.
    let Some(env) = TestEnv::new("net-hairpin") else {
        return;
    };
    let Some(mut lab) = Lab::new(&env) else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "br0.yaml",
        &bridge("br0", "addresses: [10.0.0.1/24]\nnat: true"),
    );
    apply(&env, manifests.path());
    // No ICMP redirects: the guests keep sending through the host.
    lab.sysctl("net/ipv4/conf/all/send_redirects", "0");
    lab.sysctl("net/ipv4/conf/br0/send_redirects", "0");
    let client = routed_guest(&mut lab, "g1", "br0", "10.0.0.5");
    let server = routed_guest(&mut lab, "g2", "br0", "10.0.0.10");
    lab.serve(&server, "0.0.0.0", 80, "neighbour");
    assert_eq!(
        lab.http_get(&client, "10.0.0.10", 80, "/cgi-bin/ip")
            .map_err(|outcome| outcome.to_string())
            .as_deref(),
        Ok("10.0.0.5"),
        "the neighbour saw another source"
    );
}

/// The golden files of the network driver's rules (`reconciler/src/drivers/network/
/// golden/`) hold each rule twice: as written and as `nft -j list` prints it, the form
/// drift compares with. Here the real `nft` reads the written form and lists it back.
#[test]
fn golden_rules_list_back_as_their_golden_listed_form() {
    let Some(env) = TestEnv::new("net-golden") else {
        return;
    };
    let Some(lab) = Lab::new(&env) else {
        return;
    };
    let dir = gitvisor_e2e::workspace_root().join("reconciler/src/drivers/network/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the golden files")
        .map(|entry| entry.expect("a golden file").path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("JSON");
        let written = lab.files().join("written.json");
        std::fs::write(&written, golden["written"].to_string()).expect("write");
        lab.nft(&["-j", "-f", &written.to_string_lossy()])
            .expect_code(0);
        let listing: serde_json::Value = lab
            .nft(&["-j", "list", "table", "inet", "gitvisor"])
            .expect_code(0)
            .json();
        let listed: Vec<serde_json::Value> = listing["nftables"]
            .as_array()
            .expect("a listing")
            .iter()
            .filter_map(|item| item.get("rule"))
            .filter(|rule| !rule["comment"].as_str().unwrap_or("").contains(": jump "))
            .map(|rule| {
                serde_json::json!({
                    "chain": rule["chain"], "comment": rule["comment"], "expr": rule["expr"]
                })
            })
            .collect();
        let mut expected = golden["listed"].as_array().expect("listed").clone();
        // By chain, each chain's rules in their order (a stable sort).
        let key = |v: &serde_json::Value| v["chain"].to_string();
        let mut listed = listed;
        listed.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(listed, expected, "{}", file.display());
        lab.nft(&["delete", "table", "inet", "gitvisor"])
            .expect_code(0);
    }
}

/// `apply` of eight NAT bridges with DHCP is SIGKILLed once the third bridge appears
/// (timed by `ip monitor link`); the next apply finishes: one dnsmasq per bridge, each
/// bridge's rules and jumps once, and a clean plan.
#[test]
fn an_apply_killed_part_way_is_finished_by_the_next() {
    let Some(env) = TestEnv::new("net-crash") else {
        return;
    };
    let Some(lab) = Lab::new(&env) else {
        return;
    };
    let manifests = Manifests::new();
    const N: usize = 8;
    for i in 0..N {
        manifests.write(
            &format!("gvn{i}.yaml"),
            &bridge(
                &format!("gvn{i}"),
                &format!(
                    "addresses: [10.{i}.0.1/24]\nnat: true\ndhcp: {{range: 10.{i}.0.100-10.{i}.0.199}}"
                ),
            ),
        );
    }
    let (mut monitor, events) = env.monitor_links();
    let mut apply_cmd = env.gitvisor_command([OsStr::new("apply"), manifests.path().as_os_str()]);
    apply_cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = apply_cmd.spawn().expect("start apply");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < 3 && Instant::now() < deadline {
        if let Ok(name) = events.recv_timeout(Duration::from_millis(100))
            && name.starts_with("gvn")
        {
            seen.insert(name);
        }
    }
    let _ = child.kill();
    let status = child.wait().expect("wait for apply");
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(
        status.code().is_none(),
        "apply finished before the kill: {status}"
    );

    apply(&env, manifests.path());
    assert_plan_clean(&env, &manifests);
    assert_eq!(lab.dnsmasq_pids().len(), N, "one dnsmasq per bridge");
    let listing = lab
        .nft(&["list", "table", "inet", "gitvisor"])
        .expect_code(0)
        .stdout;
    for i in 0..N {
        // The jump's target carries the instance id: `gvn0: jump gv<id>-gvn0-post`.
        let jump = format!("-gvn{i}-post comment \"gvn{i}: jump gv");
        assert_eq!(listing.matches(&jump).count(), 1, "{jump} in\n{listing}");
        let masquerade = format!("comment \"gvn{i}: masquerade 10.{i}.0.0/24\"");
        assert_eq!(listing.matches(&masquerade).count(), 1, "{listing}");
    }
}
