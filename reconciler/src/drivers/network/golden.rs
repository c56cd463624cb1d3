//! Golden files for every nftables rule the network driver writes: for each network mode
//! (and published ports from everywhere, on every address or one), the whole transaction
//! that creates the bridge's rules as `nft -j -f -` reads it, and each rule's expressions
//! in the form `nft -j list` prints them (what drift compares observed rules with,
//! `nft.rs`). A change to any rule, even one match dropped, shows as a diff of these
//! files, to be reviewed like code.
//!
//! Regenerate after an intended change with
//! `GITVISOR_BLESS=1 cargo test -p gitvisor --lib drivers::network::golden`, then read
//! the diff of `reconciler/src/drivers/network/golden/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::desired::BridgeNetwork;
use super::drift::{NetworkDrift, RevisionFacts};
use super::instance::Instance;
use super::nft::listed_exprs;
use super::seam::{NetworkState, TableObservation};
use crate::contract::PlanContext;
use crate::drivers::bridge::BridgeSpec;
use crate::model::{Metadata, Name, Resource, Spec};

/// Each golden file: its name and the bridge `br0`'s spec.
const CASES: &[(&str, &str)] = &[
    ("isolated", "addresses: [10.0.0.1/24]"),
    ("nat", "addresses: [10.0.0.1/24, 10.1.0.1/16]\nnat: true"),
    (
        "nat-uplink-published",
        "addresses: [10.0.0.1/24]\nnat: true\nuplink: eth1\npublish:\n  - {address: 10.0.0.10, hostPort: 8080, port: 80}\n  - {address: 10.0.0.11, hostPort: 53, protocol: udp, hostAddress: 192.0.2.1}",
    ),
    (
        "nat-published-ipv6-and-loopback",
        "addresses: [10.0.0.1/24, 'fd00::1/64']\nnat: true\npublish:\n  - {address: 'fd00::10', hostPort: 8443, port: 443}\n  - {address: 10.0.0.10, hostPort: 8080, port: 80, hostAddress: 127.0.0.1}",
    ),
    ("routed", "addresses: [10.0.0.1/24]\nuplink: eth1"),
    (
        "routed-published-ipv6",
        "addresses: [10.0.0.1/24, 'fd00::1/64']\nuplink: eth1\npublish:\n  - {address: 'fd00::10', hostPort: 8443, port: 443, hostAddress: 'fd01::1'}",
    ),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/drivers/network/golden")
}

/// The golden document of `spec`: the create transaction and the listed rules.
fn render(spec: &str) -> Value {
    let spec: BridgeSpec = serde_yaml::from_str(spec).expect("golden spec parses");
    let name = Name::parse("br0").expect("valid name");
    let resource = Arc::new(Resource::new(
        Metadata::named(name.clone()),
        Spec::new(spec.clone()),
    ));
    let context = PlanContext::new([]).with_revision(&[resource]);
    let network = BridgeNetwork::new(
        &name,
        &spec,
        &context,
        Some("eth0"),
        Path::new("/run/gitvisor/network"),
    );
    let host = NetworkState {
        table: TableObservation::Absent,
        forwarding: Default::default(),
        forwarding_enabled: Default::default(),
        route_localnet: Default::default(),
        default_route: Some("eth0".into()),
        dhcp: Default::default(),
        listeners: Vec::new(),
    };
    let instance = Instance::fixed("golden00");
    let revision = RevisionFacts::new(
        instance.clone(),
        true,
        Default::default(),
        &Default::default(),
        &host,
    );
    let drift = NetworkDrift::between("br0", Some(&network), &host, &revision);
    let listed: Vec<Value> = network
        .rules()
        .into_iter()
        .flat_map(|(hook, rules)| {
            let instance = &instance;
            rules.into_iter().map(move |rule| {
                json!({
                    "chain": instance.chain_of(hook, "br0"),
                    "comment": rule.comment,
                    "expr": listed_exprs(&rule),
                })
            })
        })
        .collect();
    json!({ "written": drift.nft.to_json(), "listed": listed })
}

#[test]
fn every_rule_the_driver_writes_matches_its_golden_file_byte_for_byte() {
    let bless = std::env::var_os("GITVISOR_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, spec) in CASES {
        let path = golden_dir().join(format!("{name}.json"));
        let mut text = serde_json::to_string_pretty(&render(spec)).expect("serializes");
        text.push('\n');
        if bless {
            std::fs::write(&path, &text).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        if golden != text {
            stale.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "the rules differ from their golden files (regenerate with GITVISOR_BLESS=1 and review the diff):\n{}",
        stale.join("\n")
    );
}
