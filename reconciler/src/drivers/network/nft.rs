//! gitvisor's nftables table as values: the commands of one transaction, their JSON form
//! for `nft -j -f -`, and the table as `nft -j list table inet gitvisor` shows it.
//!
//! All of gitvisor's rules live in one table, [`FAMILY`] [`TABLE`], shared by every
//! gitvisor on the host, each in chains of its own (`instance.rs`). Nothing here ever
//! names another table: other tables (an admin's firewall, Docker's, libvirt's) are never
//! listed, flushed or changed. The table is gitvisor's when it holds the chain
//! [`MARKER_CHAIN`] (nftables 1.0's JSON drops table comments, and a chain survives
//! `nft flush table`, which a rule would not).
//!
//! A rule is compared with its declaration by its comment *and* its expressions: a rule
//! edited by hand under the same comment (a masquerade widened to every source, a drop
//! turned into an accept) is drift. `nft -j list` does not print every expression the
//! way it was written (`meta l4proto tcp th dport 80` comes back as `tcp dport 80`), so
//! [`listed_exprs`] renders a declared rule in the listing's form, the canonical one the
//! observed expressions are compared with as `nft` printed them. The golden files under
//! `golden/` hold both forms of every rule the network driver writes (`golden.rs`).

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rules::{BaseChain, Expr, Hook, Rule};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "gitvisor";
/// The chain whose presence marks the table as gitvisor's.
pub const MARKER_CHAIN: &str = "managed-by-gitvisor";

/// One command of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftCommand {
    /// `add table` (no-op when it exists) with the marker chain.
    AddTable,
    /// `add chain` for a base chain `name` on `hook` (no-op when it exists).
    AddBaseChain {
        name: String,
        hook: Hook,
    },
    /// `add chain` for a regular chain (no-op when it exists).
    AddChain(String),
    FlushChain(String),
    DeleteChain(String),
    AddRule {
        chain: String,
        rule: Rule,
    },
    /// Deletes the rule `handle` of `chain`; `comment` is what it said, for people.
    DeleteRule {
        chain: String,
        handle: u64,
        comment: String,
    },
    DeleteTable,
}

impl fmt::Display for NftCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = format!("{FAMILY} {TABLE}");
        match self {
            NftCommand::AddTable => write!(f, "add table {table}"),
            NftCommand::AddBaseChain { name, .. } => write!(f, "add chain {table} {name}"),
            NftCommand::AddChain(chain) => write!(f, "add chain {table} {chain}"),
            NftCommand::FlushChain(chain) => write!(f, "flush chain {table} {chain}"),
            NftCommand::DeleteChain(chain) => write!(f, "delete chain {table} {chain}"),
            NftCommand::AddRule { chain, rule } => {
                write!(f, "add rule {table} {chain} ({})", rule.comment)
            }
            NftCommand::DeleteRule {
                chain,
                handle,
                comment,
            } => write!(f, "delete rule {table} {chain} handle {handle} ({comment})"),
            NftCommand::DeleteTable => write!(f, "delete table {table}"),
        }
    }
}

/// Commands the kernel applies all or none of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction(pub Vec<NftCommand>);

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON document `nft -j -f -` reads.
    pub fn to_json(&self) -> Value {
        let commands: Vec<Value> = self.0.iter().flat_map(command_json).collect();
        json!({ "nftables": commands })
    }

    /// [`Transaction::to_json`] as text, written one command at a time: the document of
    /// a thousand bridges' rules is never a tree in memory all at once (as one, it was
    /// most of an apply's peak heap, which the allocator keeps long after).
    pub fn to_json_text(&self) -> String {
        let mut text = String::from("{\"nftables\":[");
        for (index, command) in self.0.iter().flat_map(command_json).enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(&command.to_string());
        }
        text.push_str("]}");
        text
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nftables transaction of {} commands", self.0.len())?;
        if let Some(first) = self.0.first() {
            write!(f, " ({first}")?;
            if self.0.len() > 1 {
                write!(f, ", …")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

fn chain_ref(name: &str) -> Value {
    json!({ "family": FAMILY, "table": TABLE, "name": name })
}

fn command_json(command: &NftCommand) -> Vec<Value> {
    match command {
        NftCommand::AddTable => vec![
            json!({ "add": { "table": { "family": FAMILY, "name": TABLE } } }),
            json!({ "add": { "chain": chain_ref(MARKER_CHAIN) } }),
        ],
        NftCommand::AddBaseChain { name, hook } => {
            let BaseChain {
                kind,
                hook,
                priority,
            } = hook.base();
            vec![json!({ "add": { "chain": {
                "family": FAMILY, "table": TABLE, "name": name,
                "type": kind, "hook": hook, "prio": priority, "policy": "accept"
            } } })]
        }
        NftCommand::AddChain(chain) => vec![json!({ "add": { "chain": chain_ref(chain) } })],
        NftCommand::FlushChain(chain) => vec![json!({ "flush": { "chain": chain_ref(chain) } })],
        NftCommand::DeleteChain(chain) => {
            vec![json!({ "delete": { "chain": chain_ref(chain) } })]
        }
        NftCommand::AddRule { chain, rule } => vec![json!({ "add": { "rule": {
            "family": FAMILY, "table": TABLE, "chain": chain,
            "expr": written_exprs(rule),
            "comment": rule.comment,
        } } })],
        NftCommand::DeleteRule { chain, handle, .. } => vec![json!({ "delete": { "rule": {
            "family": FAMILY, "table": TABLE, "chain": chain, "handle": handle
        } } })],
        NftCommand::DeleteTable => {
            vec![json!({ "delete": { "table": { "family": FAMILY, "name": TABLE } } })]
        }
    }
}

/// The expressions of `rule` as gitvisor writes them to `nft -j -f -`.
pub fn written_exprs(rule: &Rule) -> Vec<Value> {
    rule.exprs.iter().map(expr_json).collect()
}

/// The expressions of `rule` as `nft -j list` prints them once written: the canonical
/// form observed rules are compared in. The one difference `nft` makes to what gitvisor
/// writes: a transport port after its protocol (`meta l4proto tcp`, `th dport 80`)
/// lists as that protocol's port (`tcp dport 80`), the protocol match folded into it.
pub fn listed_exprs(rule: &Rule) -> Vec<Value> {
    let mut listed = Vec::with_capacity(rule.exprs.len());
    let mut exprs = rule.exprs.iter().peekable();
    while let Some(expr) = exprs.next() {
        if let (Expr::L4Proto(protocol), Some(Expr::Dport(port))) = (expr, exprs.peek()) {
            listed.push(matches(
                "==",
                json!({ "payload": { "protocol": protocol.as_str(), "field": "dport" } }),
                json!(port),
            ));
            exprs.next();
            continue;
        }
        listed.push(expr_json(expr));
    }
    listed
}

/// The two sides of a listed `match` expression.
fn match_sides(expr: &Value) -> Option<(Option<&Value>, Option<&Value>)> {
    expr.get("match").map(|m| (m.get("left"), m.get("right")))
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({ "match": { "op": op, "left": left, "right": right } })
}

fn meta(key: &str) -> Value {
    json!({ "meta": { "key": key } })
}

fn address_payload(family_of: &IpNet, field: &str) -> Value {
    let protocol = match family_of {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    };
    json!({ "payload": { "protocol": protocol, "field": field } })
}

fn prefix(net: &IpNet) -> Value {
    json!({ "prefix": { "addr": net.network().to_string(), "len": net.prefix_len() } })
}

fn expr_json(expr: &Expr) -> Value {
    match expr {
        Expr::IifName(name) => matches("==", meta("iifname"), json!(name)),
        Expr::OifName(name) => matches("==", meta("oifname"), json!(name)),
        Expr::SaddrIn(net) => matches("==", address_payload(net, "saddr"), prefix(net)),
        Expr::DaddrIn(net) => matches("==", address_payload(net, "daddr"), prefix(net)),
        Expr::DaddrNotIn(net) => matches("!=", address_payload(net, "daddr"), prefix(net)),
        Expr::Daddr(address) => {
            let net = IpNet::from(*address);
            matches(
                "==",
                address_payload(&net, "daddr"),
                json!(address.to_string()),
            )
        }
        Expr::DaddrNot(address) => {
            let net = IpNet::from(*address);
            matches(
                "!=",
                address_payload(&net, "daddr"),
                json!(address.to_string()),
            )
        }
        Expr::DaddrLocal => matches(
            "==",
            json!({ "fib": { "result": "type", "flags": ["daddr"] } }),
            json!("local"),
        ),
        Expr::L4Proto(protocol) => matches("==", meta("l4proto"), json!(protocol.as_str())),
        Expr::Dport(port) => matches(
            "==",
            json!({ "payload": { "protocol": "th", "field": "dport" } }),
            json!(port),
        ),
        Expr::CtReply => matches(
            "in",
            json!({ "ct": { "key": "state" } }),
            json!(["established", "related"]),
        ),
        Expr::CtDnat => matches("in", json!({ "ct": { "key": "status" } }), json!("dnat")),
        Expr::Accept => json!({ "accept": null }),
        Expr::Drop => json!({ "drop": null }),
        Expr::Masquerade => json!({ "masquerade": null }),
        Expr::Jump(target) => json!({ "jump": { "target": target } }),
        Expr::Dnat { address, port } => {
            let family = if address.is_ipv4() { "ip" } else { "ip6" };
            json!({ "dnat": { "family": family, "addr": address.to_string(), "port": port } })
        }
    }
}

/// gitvisor's table as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableState {
    /// Whether it holds [`MARKER_CHAIN`].
    pub marked: bool,
    pub chains: BTreeMap<String, ChainState>,
}

/// One chain: whether it is a base chain (its hook), and its rules in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChainState {
    pub hook: Option<String>,
    pub rules: Vec<RuleState>,
}

/// One rule as observed: its handle, its comment (gitvisor's rules all have one) and
/// its expressions as `nft -j list` printed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleState {
    pub handle: u64,
    pub comment: Option<String>,
    pub exprs: Exprs,
}

/// A rule's expressions, kept as one canonical JSON text (`serde_json` prints object
/// keys sorted, so two texts are equal exactly when the expressions are): a few hundred
/// bytes a rule, where the parsed trees took kilobytes, and what the controller keeps
/// of 20 000 rules, or a cached observation reads back, stays small.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Exprs(Box<str>);

impl Exprs {
    pub fn of(exprs: &[Value]) -> Exprs {
        Exprs(Value::from(exprs.to_vec()).to_string().into_boxed_str())
    }

    /// The expressions, parsed again (only where a rule of someone else's is read).
    pub fn values(&self) -> Vec<Value> {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl RuleState {
    /// Whether this is `rule` as declared: the same comment and the same expressions
    /// (in the listing's form, [`listed_exprs`]).
    pub fn is(&self, rule: &Rule) -> bool {
        self.comment.as_deref() == Some(rule.comment.as_str())
            && self.exprs == Exprs::of(&listed_exprs(rule))
    }

    /// Where this rule lets traffic leave the host, read from its expressions (whoever
    /// wrote it): `None` when it accepts or masquerades nothing (a drop, a jump, a DNAT);
    /// `Some(Some(interface))` when it matches `oifname interface`; `Some(None)` when it
    /// accepts or masquerades without naming the way out (out of any interface), except
    /// replies of connections (`ct`), which leave the way they came.
    pub fn routes_out(&self) -> Option<Option<String>> {
        let exprs = self.exprs.values();
        let passes = exprs
            .iter()
            .any(|expr| expr.get("accept").is_some() || expr.get("masquerade").is_some());
        if !passes {
            return None;
        }
        let out = exprs.iter().find_map(|expr| match match_sides(expr) {
            Some((Some(left), Some(Value::String(name))))
                if left.pointer("/meta/key").and_then(Value::as_str) == Some("oifname") =>
            {
                Some(name.clone())
            }
            _ => None,
        });
        if out.is_some() {
            return Some(out);
        }
        let replies = exprs.iter().any(
            |expr| matches!(match_sides(expr), Some((Some(left), _)) if left.get("ct").is_some()),
        );
        (!replies).then_some(None)
    }
}

impl TableState {
    /// The comments of `chain`'s rules, in order; empty when the chain is absent.
    pub fn comments(&self, chain: &str) -> Vec<&str> {
        self.chains
            .get(chain)
            .map(|c| {
                c.rules
                    .iter()
                    .filter_map(|r| r.comment.as_deref())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `nft -j list table` output that does not read as a table listing.
#[derive(Debug, thiserror::Error)]
#[error("unexpected `nft -j list table {FAMILY} {TABLE}` output: {what}")]
pub struct ListingError {
    pub what: String,
}

/// `nft -j list table` output, read into types directly: only chains and rules, the
/// rest of each item skipped, and no tree of the whole listing (7.6 MB of JSON for
/// 10 000 bridges' rules).
#[derive(Deserialize)]
struct Listing {
    nftables: Vec<ListedItem>,
}

#[derive(Deserialize)]
struct ListedItem {
    chain: Option<ListedChain>,
    rule: Option<ListedRule>,
}

#[derive(Deserialize)]
struct ListedChain {
    family: Option<String>,
    table: Option<String>,
    name: Option<String>,
    hook: Option<String>,
}

#[derive(Deserialize)]
struct ListedRule {
    family: Option<String>,
    table: Option<String>,
    chain: Option<String>,
    handle: Option<u64>,
    comment: Option<String>,
    expr: Option<Vec<Value>>,
}

fn ours(family: &Option<String>, table: &Option<String>) -> bool {
    family.as_deref() == Some(FAMILY) && table.as_deref() == Some(TABLE)
}

/// Reads `nft -j list table inet gitvisor` output.
pub fn parse_listing(text: &str) -> Result<TableState, ListingError> {
    let listing: Listing = serde_json::from_str(text).map_err(|e| ListingError {
        what: if serde_json::from_str::<Value>(text).is_ok() {
            format!("no \"nftables\" array of objects ({e})")
        } else {
            format!("not JSON ({e})")
        },
    })?;
    let mut table = TableState::default();
    for item in listing.nftables {
        if let Some(chain) = item.chain.filter(|c| ours(&c.family, &c.table)) {
            let name = chain.name.ok_or_else(|| ListingError {
                what: "a chain without a name".into(),
            })?;
            if name == MARKER_CHAIN {
                table.marked = true;
            }
            table.chains.entry(name).or_default().hook = chain.hook;
        } else if let Some(rule) = item.rule.filter(|r| ours(&r.family, &r.table)) {
            let (Some(chain), Some(handle)) = (rule.chain, rule.handle) else {
                return Err(ListingError {
                    what: format!(
                        "a rule without chain or handle (comment {:?})",
                        rule.comment.unwrap_or_default()
                    ),
                });
            };
            table
                .chains
                .entry(chain)
                .or_default()
                .rules
                .push(RuleState {
                    handle,
                    comment: rule.comment,
                    exprs: Exprs::of(&rule.expr.unwrap_or_default()),
                });
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_as_chains_rules_and_the_marker() {
        let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "gitvisor", "handle": 1}},
            {"chain": {"family": "inet", "table": "gitvisor", "name": "managed-by-gitvisor", "handle": 1}},
            {"chain": {"family": "inet", "table": "gitvisor", "name": "forward", "handle": 3, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
            {"chain": {"family": "inet", "table": "gitvisor", "name": "br0-fwd", "handle": 5}},
            {"rule": {"family": "inet", "table": "gitvisor", "chain": "forward", "handle": 7, "comment": "br0: jump br0-fwd", "expr": [{"jump": {"target": "br0-fwd"}}]}},
            {"rule": {"family": "inet", "table": "gitvisor", "chain": "br0-fwd", "handle": 8, "expr": [{"accept": null}]}}]}"#;
        let table = parse_listing(listing).unwrap();
        assert!(table.marked);
        assert_eq!(table.chains["forward"].hook.as_deref(), Some("forward"));
        assert_eq!(table.comments("forward"), ["br0: jump br0-fwd"]);
        assert_eq!(
            table.chains["br0-fwd"].rules,
            [RuleState {
                handle: 8,
                comment: None,
                exprs: Exprs::of(&[json!({"accept": null})]),
            }]
        );
        assert!(table.comments("absent").is_empty());
        assert!(parse_listing("{}").is_err());
        assert!(parse_listing("not json").is_err());
    }

    #[test]
    fn the_json_names_only_gitvisors_table() {
        let rule = Rule {
            comment: "br0: masquerade 10.0.0.0/24".into(),
            exprs: vec![
                Expr::SaddrIn("10.0.0.0/24".parse().unwrap()),
                Expr::Masquerade,
            ],
        };
        let transaction = Transaction(vec![
            NftCommand::AddTable,
            NftCommand::AddBaseChain {
                name: "gv0-postrouting".into(),
                hook: Hook::Postrouting,
            },
            NftCommand::AddChain("br0-post".into()),
            NftCommand::FlushChain("br0-post".into()),
            NftCommand::AddRule {
                chain: "br0-post".into(),
                rule,
            },
            NftCommand::DeleteRule {
                chain: "postrouting".into(),
                handle: 4,
                comment: "x".into(),
            },
            NftCommand::DeleteTable,
        ]);
        let json = transaction.to_json();
        let commands = json["nftables"].as_array().unwrap();
        assert_eq!(commands.len(), 8, "the table comes with its marker chain");
        for command in commands {
            let object = command.as_object().unwrap().values().next().unwrap();
            let object = object.as_object().unwrap().values().next().unwrap();
            assert_eq!(object["family"], FAMILY);
            let table = object.get("table").unwrap_or(&object["name"]);
            assert_eq!(table, TABLE, "{command}");
        }
        assert_eq!(
            commands[2]["add"]["chain"]["prio"], 100,
            "postrouting is a srcnat chain"
        );
        assert_eq!(
            transaction.to_string(),
            "nftables transaction of 7 commands (add table inet gitvisor, …)"
        );
        assert_eq!(transaction.to_json_text(), json.to_string());
        assert_eq!(Transaction::default().to_json_text(), r#"{"nftables":[]}"#);
    }
}
