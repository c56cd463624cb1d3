//! The managed-bridge driver over the fakes: the link fake and the network fake
//! together, as one host.

use crate::model::Spec;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::contract::{Action, CancelToken, FailureClass};
use crate::drivers::bridge::BridgeSpec;
use crate::drivers::bridge::fake::plain_link;
use crate::drivers::bridge::{FakeLinks, LinkRequest, LinkSeam, OWNERSHIP_MARKER};
use crate::model::{Metadata, Name, ResourceId};

struct Host {
    links: Arc<FakeLinks>,
    network: Arc<FakeNetwork>,
    driver: ManagedBridgeDriver,
}

/// A host with `lo` and `eth0` (the default route, forwarding off).
fn host() -> Host {
    let links = Arc::new(FakeLinks::new(vec![
        plain_link(1, "lo", None),
        plain_link(2, "eth0", None),
        plain_link(3, "eth1", None),
    ]));
    let network = Arc::new(FakeNetwork::new(Some(links.clone())));
    network.set_default_route("eth0");
    let driver = ManagedBridgeDriver::new(
        BridgeDriver::new(links.clone()),
        network.clone(),
        PathBuf::from("/run/gitvisor/network"),
        Instance::fixed("test0000"),
    );
    Host {
        links,
        network,
        driver,
    }
}

fn bridge(name: &str, spec: &str) -> Arc<Resource> {
    let spec: BridgeSpec = serde_yaml::from_str(spec).expect("test spec parses");
    let name = Name::parse(name).expect("test name is valid");
    Arc::new(Resource::new(Metadata::named(name), Spec::new(spec)))
}

fn id(name: &str) -> ResourceId {
    ResourceId::new(Kind::Bridge, Name::parse(name).expect("valid"))
}

/// The context of a run: the store records `owned`, the revision is `desired`.
fn context(desired: &[Arc<Resource>], owned: &[&str]) -> PlanContext {
    PlanContext::new(owned.iter().map(|n| id(n))).with_revision(desired)
}

const NAT: &str = "addresses: [10.0.0.1/24]\nnat: true";

/// The chain prefix of the tests' instance, `Instance::fixed("test0000")`.
const PREFIX: &str = "gvtest0000-";

impl Host {
    async fn plan(&self, desired: &[Arc<Resource>], owned: &[&str]) -> Vec<Change> {
        self.driver
            .plan(desired, &context(desired, owned))
            .await
            .expect("plan")
    }

    async fn apply_all(&self, changes: &[Change]) {
        for change in changes {
            self.driver
                .apply(change, &StepContext::detached(change.id.clone()))
                .await
                .unwrap_or_else(|e| panic!("{}: {}", change.id, e.chain()));
        }
    }

    /// Plans and applies until converged, returning the first plan.
    async fn converge(&self, desired: &[Arc<Resource>], owned: &[&str]) -> Vec<Change> {
        let changes = self.plan(desired, owned).await;
        self.apply_all(&changes).await;
        let mut owned: Vec<String> = owned.iter().map(|s| s.to_string()).collect();
        owned.extend(desired.iter().map(|r| r.metadata.name.to_string()));
        let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
        let again = self.plan(desired, &owned).await;
        assert_all_noop(&again);
        changes
    }

    /// The comments of this instance's chain `chain` (`br0-post`, `forward`: the
    /// instance prefix is added).
    fn comments(&self, chain: &str) -> Vec<String> {
        self.network
            .table()
            .and_then(|t| t.get(&format!("{PREFIX}{chain}")).cloned())
            .unwrap_or_default()
    }
}

fn assert_all_noop(changes: &[Change]) {
    let busy: Vec<_> = changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| {
            (
                c.id.to_string(),
                c.action,
                c.fields.clone(),
                c.reasons.clone(),
            )
        })
        .collect();
    assert!(busy.is_empty(), "not converged: {busy:#?}");
}

fn field<'a>(change: &'a Change, path: &str) -> Option<&'a crate::contract::FieldChange> {
    change.fields.iter().find(|f| f.path == path)
}

fn nft_requests(requests: &[NetworkRequest]) -> usize {
    requests
        .iter()
        .filter(|r| matches!(r, NetworkRequest::Nft(_)))
        .count()
}

#[tokio::test]
async fn a_nat_bridge_is_created_with_its_rules_and_forwarding_and_then_is_a_noop() {
    let host = host();
    let br0 = bridge("br0", NAT);
    let changes = host.converge(&[br0], &[]).await;
    assert_eq!(changes[0].action, Action::Create);
    let rules = field(&changes[0], "nftables").expect("the plan shows the rules");
    assert!(
        rules
            .new
            .to_string()
            .contains("br0: masquerade 10.0.0.0/24"),
        "{rules:?}"
    );
    assert_eq!(field(&changes[0], "forwarding.eth0").unwrap().new, true);
    assert_eq!(field(&changes[0], "forwarding.br0").unwrap().new, true);

    assert_eq!(host.comments("br0-post"), ["br0: masquerade 10.0.0.0/24"]);
    assert_eq!(
        host.comments("br0-fwd"),
        ["br0: forward from br0", "br0: forward replies to br0"]
    );
    assert_eq!(host.comments("forward"), ["br0: jump gvtest0000-br0-fwd"]);
    assert_eq!(
        host.comments("postrouting"),
        ["br0: jump gvtest0000-br0-post"]
    );
    assert!(
        host.network
            .table()
            .unwrap()
            .contains_key(nft::MARKER_CHAIN)
    );
    assert_eq!(host.network.forwarding("eth0"), Some(true));
    assert_eq!(host.network.forwarding("br0"), Some(true));
    assert_eq!(
        host.network
            .recorded_uplinks()
            .into_iter()
            .collect::<Vec<_>>(),
        ["eth0"]
    );
    assert_eq!(
        nft_requests(&host.network.requests()),
        1,
        "one transaction for the bridge"
    );
    assert_eq!(
        host.links.link("br0").unwrap().alias.as_deref(),
        Some(OWNERSHIP_MARKER)
    );
}

#[tokio::test]
async fn an_explicit_uplink_restricts_masquerade_and_forwarding_to_it() {
    let host = host();
    host.converge(
        &[bridge(
            "br0",
            "addresses: [10.0.0.1/24]\nnat: true\nuplink: eth1",
        )],
        &[],
    )
    .await;
    assert_eq!(
        host.comments("br0-post"),
        ["br0: masquerade 10.0.0.0/24 out of eth1"]
    );
    assert_eq!(host.network.forwarding("eth1"), Some(true));
    assert_eq!(host.network.forwarding("eth0"), Some(false));
}

#[tokio::test]
async fn a_rule_deleted_by_hand_or_a_flushed_table_is_drift_that_apply_repairs() {
    let host = host();
    let desired = [
        bridge("br0", NAT),
        bridge("br1", "addresses: [10.1.0.1/24]\nnat: true"),
    ];
    host.converge(&desired, &[]).await;
    let owned = ["br0", "br1"];

    host.network.delete_rule("br0: masquerade 10.0.0.0/24");
    let changes = host.plan(&desired, &owned).await;
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(changes[1].action, Action::NoOp, "br1's rules are intact");
    let rules = field(&changes[0], "nftables").unwrap();
    assert_eq!(rules.old, serde_json::json!([]));
    assert_eq!(
        rules.new,
        serde_json::json!(["br0: masquerade 10.0.0.0/24"])
    );
    let NetworkRequest::Nft(transaction) = &changes[0]
        .observed_as::<ManagedSnapshot>()
        .unwrap()
        .network
        .requests(false)[0]
    else {
        panic!("the repair is one transaction")
    };
    assert!(
        transaction
            .0
            .iter()
            .all(|c| !c.to_string().contains("br0-fwd") && !c.to_string().contains("br1")),
        "only the chain that drifted is rewritten: {transaction:?}"
    );
    host.converge(&desired, &owned).await;

    host.network.flush_table();
    let changes = host.plan(&desired, &owned).await;
    assert!(changes.iter().all(|c| c.action == Action::Update));
    host.converge(&desired, &owned).await;
    assert_eq!(
        host.comments("forward"),
        [
            "br0: jump gvtest0000-br0-fwd",
            "br1: jump gvtest0000-br1-fwd"
        ]
    );
}

/// Every rule a NAT bridge with published ports and an isolated bridge have, by comment.
const PUBLISHED_NAT: &str = "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80}\n  - {address: 10.0.0.11, hostPort: 53, protocol: udp, hostAddress: 192.0.2.1}";

/// A hand edit that keeps the rule's comment and changes what it does: a drop becomes an
/// accept, an accept a drop, a masquerade loses its matches (every source, every
/// destination), a DNAT goes elsewhere, a jump becomes an accept.
fn hand_edit(exprs: &mut Vec<super::rules::Expr>) {
    use super::rules::Expr;
    match exprs.pop() {
        Some(Expr::Drop) => exprs.push(Expr::Accept),
        Some(Expr::Accept) => exprs.push(Expr::Drop),
        Some(Expr::Masquerade) => *exprs = vec![Expr::Masquerade],
        Some(Expr::Dnat { address, port }) => exprs.push(Expr::Dnat {
            address,
            port: port + 1,
        }),
        Some(Expr::Jump(_)) => exprs.push(Expr::Accept),
        Some(other) => exprs.extend([other, Expr::Accept]),
        None => {}
    }
}

#[tokio::test]
async fn every_rule_edited_by_hand_under_its_comment_is_drift_that_apply_repairs() {
    let host = host();
    let desired = [
        bridge("br0", PUBLISHED_NAT),
        bridge("iso", "addresses: [10.9.0.1/24]"),
    ];
    host.converge(&desired, &[]).await;
    let owned = ["br0", "iso"];
    let table = host.network.table().expect("the table exists");
    let comments: std::collections::BTreeSet<String> = table.into_values().flatten().collect();
    assert!(comments.len() >= 13, "{comments:#?}");
    for comment in comments {
        host.network.edit_rule(&comment, hand_edit);
        let changes = host.plan(&desired, &owned).await;
        let bridge = comment.split(':').next().unwrap_or_default();
        let change = changes
            .iter()
            .find(|c| c.id.name.as_str() == bridge)
            .unwrap_or_else(|| panic!("no change for {bridge}"));
        assert_eq!(change.action, Action::Update, "{comment}: {changes:#?}");
        let rules = field(change, "nftables").expect("an nftables field");
        // A published port's two rules share a comment; the plan says which one it is.
        let listed = rules
            .new
            .as_array()
            .and_then(|n| n.first())
            .and_then(|n| n.as_str());
        let listed = listed.unwrap_or_default().to_owned();
        assert!(
            [
                comment.clone(),
                format!("{comment} (arriving)"),
                format!("{comment} (from this host)")
            ]
            .contains(&listed),
            "{comment}: {rules:?}"
        );
        assert_eq!(
            rules.old,
            serde_json::json!([format!("{listed} (edited by hand)")]),
            "{comment}"
        );
        assert_eq!(rules.new, serde_json::json!([listed]), "{comment}");
        host.converge(&desired, &owned).await;
    }
}

/// A second gitvisor (another state dir, so another instance) on the same host.
fn second_instance(host: &Host, id: &str) -> ManagedBridgeDriver {
    ManagedBridgeDriver::new(
        BridgeDriver::new(host.links.clone()),
        host.network.clone(),
        PathBuf::from("/run/gitvisor-b/network"),
        Instance::fixed(id),
    )
}

async fn converge_with(
    driver: &ManagedBridgeDriver,
    desired: &[Arc<Resource>],
    owned: &[&str],
) -> Vec<Change> {
    let changes = driver
        .plan(desired, &context(desired, owned))
        .await
        .expect("plan");
    for change in &changes {
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {}", change.id, e.chain()));
    }
    changes
}

#[tokio::test]
async fn one_instance_pruning_its_last_rules_leaves_another_instances_rules_and_the_table() {
    let host = host();
    let b = second_instance(&host, "other000");
    // B's bridge is isolated: the uplink's forwarding switch is not what this is about.
    let b_bridge = [bridge("br1", "addresses: [10.1.0.1/24]")];
    host.converge(&[bridge("br0", NAT)], &[]).await;
    converge_with(&b, &b_bridge, &[]).await;
    let b_chains = |host: &Host| -> BTreeMap<String, Vec<String>> {
        host.network
            .table()
            .unwrap_or_default()
            .into_iter()
            .filter(|(chain, _)| chain.starts_with("gvother000-"))
            .collect()
    };
    let before = b_chains(&host);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["gvother000-br1-fwd", "gvother000-forward"],
        "B's base chain and br1's"
    );

    // A prunes its only NAT bridge: its chains go, B's stay, and so does the table.
    let changes = host.converge(&[], &["br0"]).await;
    assert_eq!(changes[0].action, Action::Delete);
    assert!(
        !changes[0]
            .reasons
            .iter()
            .any(|r| r.contains("removes nftables table")),
        "{changes:?}"
    );
    let table = host.network.table().expect("the table stays");
    assert!(
        !table.keys().any(|chain| chain.starts_with(PREFIX)),
        "A's chains are left: {table:#?}"
    );
    assert_eq!(b_chains(&host), before, "B's rules changed");
    let again = b
        .plan(&b_bridge, &context(&b_bridge, &["br1"]))
        .await
        .expect("plan");
    assert_all_noop(&again);

    // B prunes its last: nothing of anyone's is left, the table goes.
    let changes = converge_with(&b, &[], &["br1"]).await;
    assert!(
        changes[0]
            .reasons
            .iter()
            .any(|r| r.contains("removes nftables table")),
        "{changes:?}"
    );
    assert_eq!(host.network.table(), None);
}

#[tokio::test]
async fn rules_of_the_layout_before_instance_ids_are_migrated_and_others_left_alone() {
    use super::rules::{Expr, Hook, Rule};
    let host = host();
    // The layout today's main writes: base chains and bridge chains without an id, for
    // br0 (this instance's) and brx (not declared nor owned here).
    let mut legacy = vec![nft::NftCommand::AddTable];
    for hook in [Hook::Forward, Hook::Postrouting] {
        legacy.push(nft::NftCommand::AddBaseChain {
            name: hook.base_chain().to_owned(),
            hook,
        });
    }
    for bridge in ["br0", "brx"] {
        legacy.push(nft::NftCommand::AddChain(Hook::Forward.chain_of(bridge)));
        legacy.push(nft::NftCommand::AddRule {
            chain: Hook::Forward.chain_of(bridge),
            rule: Rule {
                comment: format!("{bridge}: forward from {bridge}"),
                exprs: vec![Expr::IifName(bridge.to_owned()), Expr::Accept],
            },
        });
        legacy.push(nft::NftCommand::AddRule {
            chain: "forward".to_owned(),
            rule: Rule {
                comment: Hook::Forward.jump_comment(bridge),
                exprs: vec![Expr::Jump(Hook::Forward.chain_of(bridge))],
            },
        });
    }
    legacy.push(nft::NftCommand::AddChain(Hook::Postrouting.chain_of("br0")));
    legacy.push(nft::NftCommand::AddRule {
        chain: "postrouting".to_owned(),
        rule: Rule {
            comment: Hook::Postrouting.jump_comment("br0"),
            exprs: vec![Expr::Jump(Hook::Postrouting.chain_of("br0"))],
        },
    });
    host.network
        .send(&NetworkRequest::Nft(nft::Transaction(legacy)))
        .await
        .expect("the legacy layout");

    let desired = [bridge("br0", NAT)];
    let changes = host.converge(&desired, &[]).await;
    let rules = field(&changes[0], "nftables").expect("the migration shows");
    assert!(
        rules
            .old
            .to_string()
            .contains("br0: forward from br0 (layout before instance ids)"),
        "{rules:?}"
    );
    let table = host.network.table().expect("the table");
    let names: Vec<&str> = table.keys().map(String::as_str).collect();
    assert!(
        !names.contains(&"br0-fwd") && !names.contains(&"br0-post"),
        "br0's legacy chains are left: {names:?}"
    );
    assert!(
        !names.contains(&"postrouting"),
        "a legacy base chain with only br0's jump stays: {names:?}"
    );
    assert_eq!(
        table["forward"],
        ["brx: jump brx-fwd"],
        "brx's legacy jump is not this instance's"
    );
    assert_eq!(table["brx-fwd"], ["brx: forward from brx"]);
    assert_eq!(
        host.comments("br0-post"),
        ["br0: masquerade 10.0.0.0/24"],
        "br0's rules under the instance id"
    );

    // Pruning br0 keeps brx's legacy chains (someone else's) and so the table.
    host.converge(&[], &["br0"]).await;
    let table = host.network.table().expect("the table stays for brx");
    assert_eq!(table["brx-fwd"], ["brx: forward from brx"]);
    assert!(!table.keys().any(|chain| chain.starts_with(PREFIX)));
}

#[tokio::test]
async fn pruning_one_nat_bridge_keeps_the_others_rules_and_the_last_removes_the_table() {
    let host = host();
    let both = [
        bridge("br0", NAT),
        bridge("br1", "addresses: [10.1.0.1/24]\nnat: true"),
    ];
    host.converge(&both, &[]).await;
    let br1_rules = host.comments("br1-post");

    let changes = host.converge(&both[1..], &["br0", "br1"]).await;
    let actions: Vec<_> = changes
        .iter()
        .map(|c| (c.id.to_string(), c.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("Bridge/br1".to_owned(), Action::NoOp),
            ("Bridge/br0".to_owned(), Action::Delete)
        ]
    );
    assert!(host.links.link("br0").is_none());
    assert!(!host.network.table().unwrap().contains_key("br0-post"));
    assert_eq!(host.comments("br1-post"), br1_rules);
    assert_eq!(
        host.comments("postrouting"),
        ["br1: jump gvtest0000-br1-post"]
    );
    assert_eq!(
        host.network.forwarding("eth0"),
        Some(true),
        "br1 still uses eth0"
    );

    let changes = host.converge(&[], &["br1"]).await;
    assert_eq!(changes[0].action, Action::Delete);
    assert!(
        changes[0]
            .reasons
            .iter()
            .any(|r| r.contains("removes nftables table")),
        "{:?}",
        changes[0].reasons
    );
    assert_eq!(
        host.network.table(),
        None,
        "the last NAT bridge takes the table"
    );
    assert_eq!(host.network.forwarding("eth0"), Some(false), "given back");
    assert!(host.network.recorded_uplinks().is_empty());
}

#[tokio::test]
async fn an_uplink_that_already_forwarded_is_never_turned_off() {
    let host = host();
    host.network.set_forwarding("eth0", true);
    host.converge(&[bridge("br0", NAT)], &[]).await;
    assert!(host.network.recorded_uplinks().is_empty());
    host.converge(&[], &["br0"]).await;
    assert_eq!(host.network.forwarding("eth0"), Some(true));
}

#[tokio::test]
async fn an_uplink_is_given_back_only_when_no_other_instances_rules_route_out_of_it() {
    // A turns eth0 on (its NAT leaves by the default route); B's NAT bridge leaves by
    // `b_uplink`, or by any interface (no uplink). Then A prunes its bridge.
    async fn eth0_after_a_leaves(b_spec: &str) -> Option<bool> {
        let host = host();
        let b = second_instance(&host, "other000");
        host.converge(&[bridge("br0", NAT)], &[]).await;
        assert_eq!(host.network.forwarding("eth0"), Some(true));
        converge_with(&b, &[bridge("br1", b_spec)], &[]).await;
        let changes = host.converge(&[], &["br0"]).await;
        let turned_off = field(&changes[0], "forwarding.eth0").is_some();
        assert_eq!(
            turned_off,
            host.network.forwarding("eth0") == Some(false),
            "the plan says what apply does: {changes:#?}"
        );
        host.network.forwarding("eth0")
    }
    assert_eq!(
        eth0_after_a_leaves("addresses: [10.1.0.1/24]\nnat: true\nuplink: eth0").await,
        Some(true),
        "B's NAT out of eth0 lost its forwarding"
    );
    assert_eq!(
        eth0_after_a_leaves("addresses: [10.1.0.1/24]\nnat: true").await,
        Some(true),
        "B's NAT out of any interface lost eth0's forwarding"
    );
    assert_eq!(
        eth0_after_a_leaves("addresses: [10.1.0.1/24]\nuplink: eth1").await,
        Some(false),
        "B routes out of eth1 only: eth0 is A's to give back"
    );
    assert_eq!(
        eth0_after_a_leaves("addresses: [10.1.0.1/24]").await,
        Some(false),
        "B's isolated bridge routes nowhere"
    );
}

#[tokio::test]
async fn a_bridge_without_ports_nat_or_uplink_is_isolated() {
    let host = host();
    host.network.set_forwarding("eth0", true);
    host.converge(&[bridge("lab", "addresses: [10.9.0.1/24]")], &[])
        .await;
    assert_eq!(
        host.comments("lab-fwd"),
        [
            "lab: isolate, nothing forwarded from lab",
            "lab: isolate, nothing forwarded to lab"
        ]
    );
    assert_eq!(host.network.forwarding("lab"), Some(false));
}

#[tokio::test]
async fn a_bridged_bridge_needs_no_table_and_no_nft() {
    let links = Arc::new(FakeLinks::new(vec![plain_link(2, "eth1", None)]));
    let network = Arc::new(FakeNetwork::new(Some(links.clone())).without_nft());
    let driver = ManagedBridgeDriver::new(
        BridgeDriver::new(links.clone()),
        network.clone(),
        PathBuf::from("/run/gitvisor/network"),
        Instance::fixed("test0000"),
    );
    let lan = [bridge("lan", "ports: [eth1]")];
    let changes = driver.plan(&lan, &context(&lan, &[])).await.unwrap();
    assert_eq!(changes[0].action, Action::Create);
    assert!(field(&changes[0], "nftables").is_none());

    let nat = [bridge("br0", NAT)];
    let error = driver.plan(&nat, &context(&nat, &[])).await.unwrap_err();
    assert_eq!(error.class(), FailureClass::NeedsUser);
    assert!(
        error
            .chain()
            .contains("bridge br0: nat mode needs nftables"),
        "{}",
        error.chain()
    );
}

#[tokio::test]
async fn a_table_of_that_name_without_the_marker_is_a_conflict_and_left_alone() {
    let host = host();
    host.network.foreign_table();
    let changes = host.plan(&[bridge("br0", NAT)], &[]).await;
    assert_eq!(changes[0].action, Action::Conflict);
    assert!(
        changes[0]
            .reason()
            .unwrap()
            .contains("without gitvisor's marker chain")
    );
    // A bridged one is fine: it needs no table.
    let changes = host.plan(&[bridge("lan", "ports: [eth1]")], &[]).await;
    assert_eq!(changes[0].action, Action::Create);
}

#[tokio::test]
async fn published_ports_are_dnat_from_outside_and_from_the_host() {
    let host = host();
    let br0 = bridge(
        "br0",
        "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80}\n  - {address: 10.0.0.11, hostPort: 53, protocol: udp, hostAddress: 192.0.2.1}",
    );
    host.converge(&[br0], &[]).await;
    let published = [
        "br0: publish tcp *:8080 -> 10.0.0.10:80",
        "br0: publish udp 192.0.2.1:53 -> 10.0.0.11:53",
    ];
    assert_eq!(host.comments("br0-pre")[1..], published);
    assert_eq!(host.comments("br0-out"), published);

    // The plan lists each of the two DNAT rules of a publication once, saying which is
    // which, instead of the same line twice.
    let moved = bridge(
        "br0",
        "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8081, port: 80}\n  - {address: 10.0.0.11, hostPort: 53, protocol: udp, hostAddress: 192.0.2.1}",
    );
    let changes = host.plan(&[moved], &["br0"]).await;
    let rules = field(&changes[0], "nftables").expect("the rules change");
    let listed: Vec<&str> = rules
        .new
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r.as_str())
        .filter(|r| r.contains("8081"))
        .collect();
    assert_eq!(
        listed,
        [
            "br0: publish tcp *:8081 -> 10.0.0.10:80 (arriving)",
            "br0: publish tcp *:8081 -> 10.0.0.10:80 (from this host)",
        ],
        "{rules:?}"
    );
    assert!(
        host.comments("br0-fwd")
            .contains(&"br0: forward published ports to br0".to_owned())
    );
    assert!(
        host.comments("br0-post")
            .contains(&"br0: masquerade published ports reached from 10.0.0.0/24".to_owned())
    );
}

/// The guard that keeps guests off the host's loopback, first in `br0-pre` while the
/// bridge routes 127.0.0.0/8; and the masquerade of what the loopback sends.
const LOOPBACK_GUARD: &str = "br0: guard the host's loopback from br0";
const LOOPBACK_MASQUERADE: &str = "br0: masquerade published ports reached on the host's loopback";

#[tokio::test]
async fn a_port_published_on_every_address_answers_on_loopback_through_route_localnet() {
    let host = host();
    let published = bridge(
        "br0",
        "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80}",
    );
    let changes = host.plan(std::slice::from_ref(&published), &[]).await;
    let switch = field(&changes[0], "route_localnet").expect("the plan shows the switch");
    assert_eq!(
        (&switch.old, &switch.new),
        (&serde_json::Value::Null, &serde_json::json!(true))
    );
    host.converge(std::slice::from_ref(&published), &[]).await;
    assert_eq!(host.network.route_localnet("br0"), Some(true));
    assert_eq!(host.comments("br0-pre")[0], LOOPBACK_GUARD);
    assert!(
        host.comments("br0-post")
            .contains(&LOOPBACK_MASQUERADE.to_owned())
    );
    // The guard is in place before the switch goes on.
    let requests = host.network.requests();
    let on = requests
        .iter()
        .position(|r| matches!(r, NetworkRequest::SetRouteLocalnet { on: true, .. }))
        .expect("the switch is set");
    assert!(
        requests[..on]
            .iter()
            .any(|r| matches!(r, NetworkRequest::Nft(_)))
    );
    // The DNAT from the host itself takes 127.0.0.1 too: no loopback exception left.
    let out = host.network.rule_exprs(&format!("{PREFIX}br0-out"), 0);
    assert_eq!(
        out.first(),
        Some(&super::rules::Expr::DaddrLocal),
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|e| matches!(e, super::rules::Expr::DaddrNotIn(_))),
        "{out:?}"
    );

    // On one address of the host only: no loopback, the switch goes back off, before
    // the guard goes.
    let one_address = bridge(
        "br0",
        "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80, hostAddress: 192.0.2.1}",
    );
    let changes = host
        .plan(std::slice::from_ref(&one_address), &["br0"])
        .await;
    let switch = field(&changes[0], "route_localnet").expect("the plan shows the switch");
    assert_eq!(
        (&switch.old, &switch.new),
        (&serde_json::json!(true), &serde_json::json!(false))
    );
    let before = host.network.requests().len();
    host.converge(std::slice::from_ref(&one_address), &["br0"])
        .await;
    let requests = host.network.requests()[before..].to_vec();
    assert!(
        matches!(
            requests.first(),
            Some(NetworkRequest::SetRouteLocalnet { on: false, .. })
        ),
        "{requests:?}"
    );
    assert_eq!(host.network.route_localnet("br0"), Some(false));
    assert!(
        !host
            .comments("br0-pre")
            .contains(&LOOPBACK_GUARD.to_owned())
    );
    assert!(
        !host
            .comments("br0-post")
            .contains(&LOOPBACK_MASQUERADE.to_owned())
    );

    // On 127.0.0.1 itself: on again; pruned with the bridge: off before the link goes.
    let on_loopback = bridge(
        "br0",
        "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80, hostAddress: 127.0.0.1}",
    );
    host.converge(std::slice::from_ref(&on_loopback), &["br0"])
        .await;
    assert_eq!(host.network.route_localnet("br0"), Some(true));
    let before = host.network.requests().len();
    let pruned = host.plan(&[], &["br0"]).await;
    assert_eq!(pruned[0].action, Action::Delete);
    assert!(field(&pruned[0], "route_localnet").is_some(), "{pruned:?}");
    host.apply_all(&pruned).await;
    let requests = host.network.requests()[before..].to_vec();
    assert!(
        requests
            .iter()
            .any(|r| matches!(r, NetworkRequest::SetRouteLocalnet { on: false, .. })),
        "{requests:?}"
    );
    assert_eq!(
        host.network.route_localnet("br0"),
        None,
        "the bridge is gone"
    );
    assert!(host.network.table().is_none());
}

#[tokio::test]
async fn a_rule_written_before_loopback_publishing_reads_as_an_upgrade_not_a_hand_edit() {
    use super::rules::Expr;
    let host = host();
    let br0 = bridge(
        "br0",
        "addresses: [10.0.0.1/24]\nnat: true\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80}",
    );
    host.converge(std::slice::from_ref(&br0), &[]).await;
    let comment = "br0: publish tcp *:8080 -> 10.0.0.10:80";
    // What gitvisor wrote before in the output chain: every local address but
    // 127.0.0.0/8.
    let old_form = |exprs: &mut Vec<Expr>| {
        exprs.insert(1, Expr::DaddrNotIn("127.0.0.0/8".parse().expect("net")))
    };
    host.network
        .edit_rule_in(&format!("{PREFIX}br0-out"), comment, old_form);
    let changes = host.plan(std::slice::from_ref(&br0), &["br0"]).await;
    let rules = field(&changes[0], "nftables").expect("the rule is drift");
    assert_eq!(
        rules.old,
        serde_json::json!([format!(
            "{comment} (from this host) (as gitvisor wrote it before publishing on 127.0.0.1)"
        )]),
        "{rules:?}"
    );
    host.converge(std::slice::from_ref(&br0), &["br0"]).await;
    // Anything else under the comment is still a hand edit.
    host.network
        .edit_rule_in(&format!("{PREFIX}br0-out"), comment, |exprs| {
            exprs.insert(1, Expr::DaddrNotIn("127.0.0.0/16".parse().expect("net")))
        });
    let changes = host.plan(std::slice::from_ref(&br0), &["br0"]).await;
    let rules = field(&changes[0], "nftables").expect("the rule is drift");
    assert_eq!(
        rules.old,
        serde_json::json!([format!("{comment} (from this host) (edited by hand)")]),
    );
}

#[tokio::test]
async fn a_port_published_to_an_ipv6_guest_is_ip6_dnat_except_from_the_ipv6_loopback() {
    let host = host();
    let br0 = bridge(
        "br0",
        "addresses: [10.0.0.1/24, 'fd00::1/64']\nnat: true\npublish:\n  - {address: 'fd00::10', hostPort: 8443, port: 443}",
    );
    host.converge(std::slice::from_ref(&br0), &[]).await;
    let comment = "br0: publish tcp *:8443 -> fd00::10:443";
    assert_eq!(host.comments("br0-pre"), [comment]);
    assert_eq!(host.comments("br0-out"), [comment]);
    let out = host.network.rule_exprs(&format!("{PREFIX}br0-out"), 0);
    assert!(
        out.contains(&super::rules::Expr::DaddrNot(
            "::1".parse().expect("address")
        )),
        "{out:?}"
    );
    assert!(out.contains(&super::rules::Expr::Dnat {
        address: "fd00::10".parse().expect("address"),
        port: 443
    }));
    // Nothing IPv4 answers on loopback: the bridge keeps its switch off.
    assert_eq!(host.network.route_localnet("br0"), Some(false));
}

const DHCP: &str = "addresses: [10.0.0.1/24]\nnat: true\ndhcp:\n  range: 10.0.0.100-10.0.0.199\n  domain: lab\n  static:\n    - {mac: '52:54:00:00:00:10', address: 10.0.0.10, name: vm1}";

#[tokio::test]
async fn dhcp_is_started_restarted_when_it_dies_or_changes_and_removed_with_the_bridge() {
    let host = host();
    let br0 = [bridge("br0", DHCP)];
    let changes = host.converge(&br0, &[]).await;
    assert_eq!(field(&changes[0], "dhcp").unwrap().new, "running");
    let state = host.network.dhcp("br0").unwrap();
    let config = state.config.unwrap();
    assert!(config.contains("dhcp-host=52:54:00:00:00:10,10.0.0.10,vm1,3600"));
    let first = state.running.unwrap();

    host.network.kill_dhcp("br0");
    let changes = host.plan(&br0, &["br0"]).await;
    assert_eq!(changes[0].action, Action::Update);
    let dhcp = field(&changes[0], "dhcp").unwrap();
    assert_eq!(
        (dhcp.old.as_str(), dhcp.new.as_str()),
        (Some("stopped"), Some("running"))
    );
    host.converge(&br0, &["br0"]).await;
    assert_ne!(host.network.dhcp("br0").unwrap().running, Some(first));

    let changed = [bridge("br0", &format!("{DHCP}\n  leaseTime: 10m"))];
    let changes = host.plan(&changed, &["br0"]).await;
    let dhcp = field(&changes[0], "dhcp").unwrap();
    // A new dnsmasq configuration restarts dnsmasq, not the bridge: nothing on it stops.
    assert_eq!(dhcp.effect, crate::contract::Effect::Hot);
    assert!(!changes[0].is_disruptive(), "{:?}", changes[0]);
    host.converge(&changed, &["br0"]).await;
    assert!(
        host.network
            .dhcp("br0")
            .unwrap()
            .config
            .unwrap()
            .contains(",600")
    );

    let before = host.network.requests().len();
    host.converge(&[], &["br0"]).await;
    assert_eq!(host.network.dhcp("br0"), None);
    let requests = &host.network.requests()[before..];
    assert!(
        matches!(requests[0], NetworkRequest::StopDhcp { .. }),
        "dnsmasq stops first: {requests:?}"
    );
}

#[tokio::test]
async fn vm_nics_with_a_mac_on_the_bridge_get_named_leases() {
    let host = host();
    let vm: crate::drivers::vm::VirtualMachineSpec = serde_yaml::from_str(
        "memory: 256MiB\nboot: {kernel: /k}\nnetworks: [{bridge: br0, mac: '52:54:00:00:00:42'}]",
    )
    .unwrap();
    let vm = Arc::new(Resource::new(
        Metadata::named(Name::parse("web").unwrap()),
        Spec::new(vm),
    ));
    let br0 = bridge("br0", DHCP);
    let desired = [br0.clone()];
    let context = context(&[br0, vm], &[]);
    let changes = host.driver.plan(&desired, &context).await.unwrap();
    host.apply_all(&changes).await;
    let config = host.network.dhcp("br0").unwrap().config.unwrap();
    assert!(
        config.contains("dhcp-host=52:54:00:00:00:42,web,3600"),
        "{config}"
    );
}

fn guest(name: &str, spec: Spec) -> Arc<Resource> {
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid")),
        spec,
    ))
}

fn container(name: &str, spec: &str) -> Arc<Resource> {
    guest(
        name,
        Spec::new::<crate::drivers::container::ContainerSpec>(
            serde_yaml::from_str(spec).expect("parses"),
        ),
    )
}

fn vm(name: &str, spec: &str) -> Arc<Resource> {
    guest(
        name,
        Spec::new::<crate::drivers::vm::VirtualMachineSpec>(
            serde_yaml::from_str(spec).expect("parses"),
        ),
    )
}

/// The bridge br0 planned in a revision that also declares `guests`.
async fn plan_with_guests(host: &Host, br0: &Arc<Resource>, guests: &[Arc<Resource>]) -> Change {
    let mut revision = vec![br0.clone()];
    revision.extend(guests.iter().cloned());
    let mut changes = host
        .driver
        .plan(std::slice::from_ref(br0), &context(&revision, &["br0"]))
        .await
        .expect("plan");
    assert_eq!(changes.len(), 1, "{changes:?}");
    changes.remove(0)
}

#[tokio::test]
async fn guests_publish_through_their_bridge_and_a_changed_list_is_the_bridges_drift() {
    let host = host();
    let br0 = bridge("br0", DHCP);
    let web = |publish: &str| {
        container(
            "web",
            &format!("image: /i\nnetwork: {{bridge: br0, address: 10.0.0.20/24{publish}}}"),
        )
    };
    let vm1 = vm(
        "vm1",
        "memory: 256MiB\nboot: {kernel: /k}\nnetworks:\n  - {bridge: br1, mac: '52:54:00:00:00:99', publish: [{hostPort: 9999}]}\n  - {bridge: br0, mac: '52:54:00:00:00:10', publish: [{hostPort: 2222, port: 22}]}",
    );
    let guests = [web(", publish: [{hostPort: 8080, port: 80}]"), vm1.clone()];
    let create = plan_with_guests(&host, &br0, &guests).await;
    assert_eq!(create.action, Action::Create);
    host.apply_all(&[create]).await;
    let both = [
        "br0: publish tcp *:8080 -> 10.0.0.20:80",
        "br0: publish tcp *:2222 -> 10.0.0.10:22",
    ];
    assert_eq!(host.comments("br0-pre")[1..], both);
    assert_eq!(host.comments("br0-out"), both);
    assert!(
        host.comments("br0-fwd")
            .contains(&"br0: forward published ports to br0".to_owned())
    );
    assert_eq!(
        plan_with_guests(&host, &br0, &guests).await.action,
        Action::NoOp
    );

    // Another host port for the container: the bridge's rules change, nothing else.
    let moved = [web(", publish: [{hostPort: 8081, port: 80}]"), vm1.clone()];
    let change = plan_with_guests(&host, &br0, &moved).await;
    assert_eq!(change.action, Action::Update);
    let paths: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["nftables"]);
    let rules = field(&change, "nftables").unwrap();
    assert!(
        rules.old.to_string().contains("tcp *:8080 -> 10.0.0.20:80"),
        "{rules:?}"
    );
    assert!(!rules.old.to_string().contains("8081"), "{rules:?}");
    assert!(
        rules.new.to_string().contains("tcp *:8081 -> 10.0.0.20:80"),
        "{rules:?}"
    );
    host.apply_all(&[change]).await;
    assert_eq!(
        host.comments("br0-pre")[1..],
        [
            "br0: publish tcp *:8081 -> 10.0.0.20:80",
            "br0: publish tcp *:2222 -> 10.0.0.10:22",
        ]
    );
    assert_eq!(
        plan_with_guests(&host, &br0, &moved).await.action,
        Action::NoOp
    );

    // Nothing published any more: the DNAT rules and the forward rule go.
    let none = [
        web(""),
        vm(
            "vm1",
            "memory: 256MiB\nboot: {kernel: /k}\nnetworks: [{bridge: br0, mac: '52:54:00:00:00:10'}]",
        ),
    ];
    let change = plan_with_guests(&host, &br0, &none).await;
    assert_eq!(field(&change, "nftables").map(|_| ()), Some(()));
    host.apply_all(&[change]).await;
    assert!(host.comments("br0-pre").is_empty());
    assert!(
        !host
            .comments("br0-fwd")
            .contains(&"br0: forward published ports to br0".to_owned())
    );
    assert_eq!(
        plan_with_guests(&host, &br0, &none).await.action,
        Action::NoOp
    );
}

/// A create of a NAT bridge with DHCP, failing at each network request in turn: the
/// next plan and apply always finish it.
#[tokio::test]
async fn a_create_interrupted_at_any_network_request_is_finished_by_the_next_run() {
    let reference = host();
    reference.converge(&[bridge("br0", DHCP)], &[]).await;
    let total = reference.network.requests().len();
    assert!(total >= 4, "{:?}", reference.network.requests());
    for failing in 0..total {
        let host = host();
        let br0 = [bridge("br0", DHCP)];
        let seen = std::sync::atomic::AtomicUsize::new(0);
        host.network
            .fail_when(move |_| seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == failing);
        let changes = host.plan(&br0, &[]).await;
        let error = host
            .driver
            .apply(&changes[0], &StepContext::detached(id("br0")))
            .await
            .unwrap_err();
        assert!(
            error.chain().starts_with("bridge br0: "),
            "{}",
            error.chain()
        );
        host.network.heal();
        host.converge(&br0, &["br0"]).await;
        assert!(host.network.dhcp("br0").unwrap().running.is_some());
    }
}

#[tokio::test]
async fn a_cancelled_apply_stops_between_requests_and_the_next_run_finishes() {
    let host = host();
    let br0 = [bridge("br0", DHCP)];
    let cancel = CancelToken::new();
    {
        let cancel = cancel.clone();
        host.network.fail_when(move |request| {
            if matches!(request, NetworkRequest::Nft(_)) {
                cancel.cancel();
            }
            false
        });
    }
    let changes = host.plan(&br0, &[]).await;
    let step = StepContext::new(
        id("br0"),
        cancel,
        crate::contract::DEFAULT_STEP_BUDGET,
        None,
    );
    let error = host.driver.apply(&changes[0], &step).await.unwrap_err();
    assert_eq!(
        error.interruption(),
        Some(&crate::contract::Interrupted::Cancelled)
    );
    assert_eq!(
        host.network.requests().len(),
        1,
        "only the transaction went out"
    );
    host.network.heal();
    host.converge(&br0, &["br0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nat_bridges_apply_in_parallel_without_touching_each_other() {
    let host = host();
    let desired: Vec<_> = (0..30)
        .map(|i| {
            bridge(
                &format!("br{i}"),
                &format!("addresses: [10.{i}.0.1/24]\nnat: true"),
            )
        })
        .collect();
    let changes = host.plan(&desired, &[]).await;
    assert_eq!(
        host.network.observes(),
        1,
        "one observation for every bridge"
    );
    let tasks: Vec<_> = changes
        .into_iter()
        .map(|change| {
            let driver = host.driver.clone();
            tokio::spawn(async move {
                driver
                    .apply(&change, &StepContext::detached(change.id.clone()))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let owned: Vec<String> = (0..30).map(|i| format!("br{i}")).collect();
    let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert_all_noop(&host.plan(&desired, &owned).await);
    assert_eq!(host.comments("postrouting").len(), 30);
}

#[tokio::test]
async fn a_recorded_bridge_whose_link_is_gone_still_has_its_network_removed() {
    let host = host();
    host.converge(&[bridge("br0", DHCP)], &[]).await;
    // The link is deleted by hand; the store still records the bridge.
    let gone = host.plan(&[], &["br0"]).await;
    let delete = gone.iter().find(|c| c.id == id("br0")).unwrap();
    let link = delete
        .observed_as::<ManagedSnapshot>()
        .unwrap()
        .link
        .clone()
        .unwrap();
    host.driver
        .links
        .apply(&link, &StepContext::detached(id("br0")))
        .await
        .unwrap();
    assert!(host.links.link("br0").is_none());

    let changes = host.plan(&[], &["br0"]).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].action, Action::Delete);
    host.apply_all(&changes).await;
    assert_eq!(host.network.table(), None);
    assert_eq!(host.network.dhcp("br0"), None);
    assert!(host.plan(&[], &["br0"]).await.is_empty());
}

#[tokio::test]
async fn a_mode_change_from_nat_to_bridged_removes_the_rules_and_the_table() {
    let host = host();
    host.converge(&[bridge("br0", NAT)], &[]).await;
    let changes = host
        .converge(
            &[bridge("br0", "addresses: [10.0.0.1/24]\nports: [eth1]")],
            &["br0"],
        )
        .await;
    assert_eq!(changes[0].action, Action::Update);
    assert_eq!(host.network.table(), None);
    assert_eq!(host.network.forwarding("eth0"), Some(false));
}

#[tokio::test]
async fn a_bridge_made_again_by_hand_gets_no_change_for_its_name() {
    let host = host();
    let br1 = bridge("br1", "addresses: [10.1.0.1/24]\nnat: true");
    host.converge(&[bridge("br0", NAT), br1.clone()], &[]).await;
    // br0 deleted and made again by hand: not gitvisor's, and no longer declared.
    host.links
        .put_link(crate::drivers::bridge::fake::bridge_link(90, "br0"));
    let changes = host.plan(&[br1], &["br0", "br1"]).await;
    assert!(
        changes.iter().all(|c| c.id != id("br0")),
        "{:?}",
        changes
            .iter()
            .map(|c| (&c.id, c.action))
            .collect::<Vec<_>>()
    );
}

/// `n` isolated bridges (each needs two rules), `lab0` to `lab{n-1}`.
fn isolated(n: usize) -> Vec<Arc<Resource>> {
    (0..n)
        .map(|i| {
            bridge(
                &format!("lab{i}"),
                &format!("addresses: [10.{}.{}.1/24]", i / 256, i % 256),
            )
        })
        .collect()
}

/// Prepares `changes` as the executor does, then applies them all at once.
async fn apply_prepared(host: &Host, changes: &[Change]) -> Vec<Result<(), DriverError>> {
    let prepared: Vec<&Change> = changes.iter().collect();
    host.driver.prepare_apply(&prepared);
    let tasks: Vec<_> = changes
        .iter()
        .cloned()
        .map(|change| {
            let driver = host.driver.clone();
            tokio::spawn(async move {
                driver
                    .apply(&change, &StepContext::detached(change.id.clone()))
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("the step task ends"));
    }
    results
}

fn names(desired: &[Arc<Resource>]) -> Vec<String> {
    desired
        .iter()
        .map(|r| r.metadata.name.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bridge_of_a_prepared_apply_shares_one_nft_run() {
    let host = host();
    let desired = isolated(40);
    let changes = host.plan(&desired, &[]).await;
    for result in apply_prepared(&host, &changes).await {
        result.unwrap_or_else(|e| panic!("{}", e.chain()));
    }
    assert_eq!(
        nft_requests(&host.network.requests()),
        1,
        "one nft run for 40 bridges"
    );
    assert_eq!(host.comments("forward").len(), 40, "one jump per bridge");
    assert_eq!(
        host.comments("lab39-fwd"),
        [
            "lab39: isolate, nothing forwarded from lab39",
            "lab39: isolate, nothing forwarded to lab39"
        ]
    );
    assert_eq!(host.network.forwarding("lab39"), Some(false));
    let owned = names(&desired);
    let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert_all_noop(&host.plan(&desired, &owned).await);

    // An update of every bridge (NAT now) is one run again; so is a drift repair.
    let nat: Vec<_> = (0..40)
        .map(|i| {
            bridge(
                &format!("lab{i}"),
                &format!("addresses: [10.0.{i}.1/24]\nnat: true"),
            )
        })
        .collect();
    let changes = host.plan(&nat, &owned).await;
    for result in apply_prepared(&host, &changes).await {
        result.unwrap_or_else(|e| panic!("{}", e.chain()));
    }
    assert_eq!(nft_requests(&host.network.requests()), 2);
    assert_eq!(host.comments("postrouting").len(), 40);
    assert_all_noop(&host.plan(&nat, &owned).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_failing_in_the_joined_transaction_fails_alone() {
    let host = host();
    let desired = isolated(5);
    // The host refuses any transaction that holds lab3's rules.
    host.network.fail_when(|request| match request {
        NetworkRequest::Nft(transaction) => transaction
            .0
            .iter()
            .any(|c| matches!(c, nft::NftCommand::AddChain(chain) if chain == &format!("{PREFIX}lab3-fwd"))),
        _ => false,
    });
    let changes = host.plan(&desired, &[]).await;
    let results = apply_prepared(&host, &changes).await;
    for (change, result) in changes.iter().zip(&results) {
        if change.id == id("lab3") {
            let error = result.as_ref().expect_err("lab3's rules are refused");
            assert!(
                error.chain().starts_with("bridge lab3: "),
                "{}",
                error.chain()
            );
        } else {
            result
                .as_ref()
                .unwrap_or_else(|e| panic!("{}: {}", change.id, e.chain()));
        }
    }
    assert_eq!(
        nft_requests(&host.network.requests()),
        1 + 5,
        "the joined run, then each bridge's own"
    );
    let jumps = host.comments("forward");
    assert_eq!(jumps.len(), 4, "{jumps:?}");
    assert!(!jumps.iter().any(|j| j.starts_with("lab3:")), "{jumps:?}");

    host.network.heal();
    let owned = names(&desired);
    let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
    host.converge(&desired, &owned).await;
}

#[tokio::test]
async fn a_bridge_the_run_leaves_out_gets_no_rules_from_the_joined_transaction() {
    let host = host();
    let desired = isolated(3);
    let changes = host.plan(&desired, &[]).await;
    // `--target lab0 --target lab1`: lab2's change is left out of the run.
    let carried_out = &changes[..2];
    assert!(carried_out.iter().all(|c| c.id != id("lab2")));
    for result in apply_prepared(&host, carried_out).await {
        result.unwrap_or_else(|e| panic!("{}", e.chain()));
    }
    assert_eq!(nft_requests(&host.network.requests()), 1);
    assert!(host.comments("lab2-fwd").is_empty());
    assert_eq!(host.comments("forward").len(), 2);
}

#[tokio::test]
async fn a_plan_carried_out_again_commits_again_and_unprepared_steps_commit_their_own() {
    let host = host();
    let desired = isolated(3);
    let owned = names(&desired);
    let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
    host.converge(&desired, &[]).await;
    let before = nft_requests(&host.network.requests());
    host.network.flush_table();
    // Updates of the rules only: the same plan can be carried out twice.
    let changes = host.plan(&desired, &owned).await;
    assert!(changes.iter().all(|c| c.action == Action::Update));
    for _ in 0..2 {
        for result in apply_prepared(&host, &changes).await {
            result.unwrap_or_else(|e| panic!("{}", e.chain()));
        }
        assert_eq!(host.comments("forward").len(), 3);
        host.network.flush_table();
    }
    assert_eq!(nft_requests(&host.network.requests()) - before, 2);

    // Without prepare, as a tool applying one change by hand: each its own run.
    let host = self::host();
    let changes = host.plan(&desired, &[]).await;
    host.apply_all(&changes).await;
    assert_eq!(nft_requests(&host.network.requests()), 3);
}

#[tokio::test]
async fn a_cancelled_run_starts_no_joined_transaction() {
    let host = host();
    let desired = isolated(3);
    let changes = host.plan(&desired, &[]).await;
    let prepared: Vec<&Change> = changes.iter().collect();
    host.driver.prepare_apply(&prepared);
    let cancel = CancelToken::new();
    cancel.cancel();
    for change in &changes {
        let step = StepContext::new(
            change.id.clone(),
            cancel.clone(),
            crate::contract::DEFAULT_STEP_BUDGET,
            None,
        );
        let error = host.driver.apply(change, &step).await.unwrap_err();
        assert_eq!(
            error.interruption(),
            Some(&crate::contract::Interrupted::Cancelled)
        );
    }
    assert_eq!(nft_requests(&host.network.requests()), 0);
}

#[tokio::test]
async fn a_new_publication_of_a_port_another_process_listens_on_is_refused_at_its_field() {
    use super::seam::Listener;
    use crate::model::Protocol;
    let host = host();
    // sshd on every address; dnsmasq-like on the bridge's own subnet (not judged).
    host.network.listen(Listener {
        protocol: Protocol::Tcp,
        address: "0.0.0.0".parse().unwrap(),
        port: 2222,
    });
    host.network.listen(Listener {
        protocol: Protocol::Udp,
        address: "10.0.0.1".parse().unwrap(),
        port: 53,
    });
    let yaml = "apiVersion: gitvisor.dev/v1alpha1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
         image: /i\n  network:\n    bridge: br0\n    address: 10.0.0.20/24\n    \
         publish: [{hostPort: 2222, port: 22}, {hostPort: 53, port: 53, protocol: udp, hostAddress: 10.0.0.1}]\n";
    let document: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML");
    let spec = serde_yaml::to_string(&document["spec"]).expect("the spec");
    let mut web = (*container("web", &spec)).clone();
    web.origin = crate::manifest::test_origin(std::path::Path::new("/srv/web.yaml"), yaml);
    let br0 = bridge("br0", NAT);
    let change = plan_with_guests(&host, &br0, &[Arc::new(web)]).await;
    assert_eq!(change.action, Action::Unsupported, "{:?}", change.reasons);
    let expected = "/srv/web.yaml:10:26: spec.network.publish[0].hostPort: tcp *:2222 is already taken on this host by a socket gitvisor did not open (tcp 0.0.0.0:2222)";
    assert_eq!(change.reasons.len(), 1, "{:?}", change.reasons);
    assert!(
        change.reasons[0].starts_with(expected),
        "{:?}",
        change.reasons
    );
    assert!(host.network.requests().is_empty());
}

/// While the driver watches, a plan reuses the last observation (one link dump, one
/// network observation) until the watch heard of a change or an apply changed the host;
/// without a watch (one-shot commands) every plan observes.
#[tokio::test]
async fn while_watched_a_plan_observes_again_only_after_an_event_or_an_apply() {
    let host = host();
    let desired = [bridge("br0", NAT)];
    host.converge(&desired, &[]).await;
    let counts = |host: &Host| (host.links.dumps(), host.network.observes());

    let before = counts(&host);
    host.plan(&desired, &["br0"]).await;
    host.plan(&desired, &["br0"]).await;
    assert_eq!(counts(&host), (before.0 + 2, before.1 + 2), "not watched");

    for cache in host.driver.caches() {
        cache.start_watching();
    }
    let watched = counts(&host);
    let first = host.plan(&desired, &["br0"]).await;
    assert_eq!(counts(&host), (watched.0 + 1, watched.1 + 1));
    let second = host.plan(&desired, &["br0"]).await;
    assert_eq!(
        counts(&host),
        (watched.0 + 1, watched.1 + 1),
        "no event: the cache answers"
    );
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|c| c.action == Action::NoOp)
    );

    // The watch hears of a bridge deleted by hand: the next plan sees it.
    let index = host.links.link("br0").expect("created").index;
    host.links
        .send(LinkRequest::DeleteLink { index })
        .await
        .expect("delete");
    for cache in host.driver.caches() {
        cache.invalidate();
    }
    let repaired = host.plan(&desired, &["br0"]).await;
    assert_eq!(counts(&host), (watched.0 + 2, watched.1 + 2));
    assert_eq!(repaired[0].action, Action::Create);

    // Its own apply changed the host: the next plan observes again, and is a no-op.
    host.apply_all(&repaired).await;
    let after = counts(&host);
    let again = host.plan(&desired, &["br0"]).await;
    assert_eq!(counts(&host), (after.0 + 1, after.1 + 1));
    assert!(again.iter().all(|c| c.action == Action::NoOp), "{again:?}");
}
