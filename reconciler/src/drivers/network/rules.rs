//! The nftables rules one bridge needs, as typed values: which chains, which rules, and
//! the comment that names each rule.
//!
//! Every bridge that needs rules has its own regular chains in gitvisor's table, one per
//! hook it uses (`br0-fwd`, `br0-post`, `br0-pre`, `br0-out`), and one jump to each from
//! the table's base chain for that hook (`forward`, `postrouting`, `prerouting`,
//! `output`). So a bridge's change touches only its own chains and jumps: bridges are
//! applied in parallel without touching each other's rules, and a change to one bridge
//! costs the same however many bridges there are.
//!
//! A rule's comment says what it does in words (`br0: masquerade 10.0.0.0/24`) and is
//! derived from every value in it, so it is also the rule's identity: observing compares
//! comments, and a rule whose values change gets another comment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use super::desired::{BridgeNetwork, Mode};
use crate::model::Protocol;

/// The hooks gitvisor's table has base chains for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Forward,
    Postrouting,
    Prerouting,
    Output,
}

/// What a base chain is: `type filter hook forward priority 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: &'static str,
    pub hook: &'static str,
    pub priority: i32,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Forward,
        Hook::Postrouting,
        Hook::Prerouting,
        Hook::Output,
    ];

    /// The base chain's name (also the hook's name).
    pub fn base_chain(self) -> &'static str {
        self.base().hook
    }

    pub fn base(self) -> BaseChain {
        match self {
            Hook::Forward => BaseChain {
                kind: "filter",
                hook: "forward",
                priority: 0,
            },
            Hook::Postrouting => BaseChain {
                kind: "nat",
                hook: "postrouting",
                priority: 100,
            },
            Hook::Prerouting => BaseChain {
                kind: "nat",
                hook: "prerouting",
                priority: -100,
            },
            Hook::Output => BaseChain {
                kind: "nat",
                hook: "output",
                priority: -100,
            },
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Hook::Forward => "fwd",
            Hook::Postrouting => "post",
            Hook::Prerouting => "pre",
            Hook::Output => "out",
        }
    }

    /// The bridge's own chain for this hook: `br0-fwd`.
    pub fn chain_of(self, bridge: &str) -> String {
        format!("{bridge}-{}", self.suffix())
    }

    /// The comment of the jump from the base chain to the bridge's chain.
    pub fn jump_comment(self, bridge: &str) -> String {
        format!("{bridge}: jump {}", self.chain_of(bridge))
    }

    /// The bridge and hook a chain of gitvisor's table belongs to, if it is a bridge's.
    pub fn parse_chain(name: &str) -> Option<(&str, Hook)> {
        Hook::ALL.into_iter().find_map(|hook| {
            name.strip_suffix(hook.suffix())
                .and_then(|rest| rest.strip_suffix('-'))
                .filter(|bridge| !bridge.is_empty())
                .map(|bridge| (bridge, hook))
        })
    }
}

/// One match or statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    IifName(String),
    OifName(String),
    SaddrIn(IpNet),
    DaddrIn(IpNet),
    DaddrNotIn(IpNet),
    Daddr(IpAddr),
    DaddrNot(IpAddr),
    /// The destination is one of the host's own addresses.
    DaddrLocal,
    L4Proto(Protocol),
    Dport(u16),
    /// `ct state established,related`
    CtReply,
    /// `ct status dnat`: the connection was destination-NATed (a published port).
    CtDnat,
    Accept,
    Drop,
    Masquerade,
    Jump(String),
    Dnat {
        address: IpAddr,
        port: u16,
    },
}

/// One rule: what it does in words (its comment and identity) and its expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub comment: String,
    pub exprs: Vec<Expr>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.comment)
    }
}

/// The rules `network` needs, by hook; hooks without rules are absent.
pub fn rules(network: &BridgeNetwork) -> BTreeMap<Hook, Vec<Rule>> {
    let bridge = network.bridge.as_str();
    let mut rules: BTreeMap<Hook, Vec<Rule>> = BTreeMap::new();
    let mut add = |hook: Hook, comment: String, exprs: Vec<Expr>| {
        rules.entry(hook).or_default().push(Rule { comment, exprs })
    };
    let iif = || Expr::IifName(bridge.to_owned());
    let oif = || Expr::OifName(bridge.to_owned());
    match &network.mode {
        Mode::Bridged => {}
        Mode::Isolated => {
            add(
                Hook::Forward,
                format!("{bridge}: isolate, nothing forwarded from {bridge}"),
                vec![iif(), Expr::Drop],
            );
            add(
                Hook::Forward,
                format!("{bridge}: isolate, nothing forwarded to {bridge}"),
                vec![oif(), Expr::Drop],
            );
        }
        Mode::Nat { uplink } | Mode::Routed { uplink } => {
            let nat = matches!(network.mode, Mode::Nat { .. });
            let mut out = vec![iif()];
            let words = match uplink {
                Some(uplink) => {
                    out.push(Expr::OifName(uplink.clone()));
                    format!("{bridge}: forward from {bridge} out of {uplink}")
                }
                None => format!("{bridge}: forward from {bridge}"),
            };
            out.push(Expr::Accept);
            add(Hook::Forward, words, out);
            add(
                Hook::Forward,
                format!("{bridge}: forward replies to {bridge}"),
                vec![Expr::CtReply, oif(), Expr::Accept],
            );
            if !network.publications.is_empty() {
                add(
                    Hook::Forward,
                    format!("{bridge}: forward published ports to {bridge}"),
                    vec![Expr::CtDnat, oif(), Expr::Accept],
                );
            }
            if nat {
                for subnet in &network.subnets {
                    let net = IpNet::V4(*subnet);
                    let mut exprs = vec![Expr::SaddrIn(net), Expr::DaddrNotIn(net)];
                    let words = match uplink {
                        Some(uplink) => {
                            exprs.push(Expr::OifName(uplink.clone()));
                            format!("{bridge}: masquerade {subnet} out of {uplink}")
                        }
                        None => format!("{bridge}: masquerade {subnet}"),
                    };
                    exprs.push(Expr::Masquerade);
                    add(Hook::Postrouting, words, exprs);
                    if !network.publications.is_empty() {
                        add(
                            Hook::Postrouting,
                            format!("{bridge}: masquerade published ports reached from {subnet}"),
                            vec![
                                Expr::SaddrIn(net),
                                Expr::DaddrIn(net),
                                Expr::CtDnat,
                                Expr::Masquerade,
                            ],
                        );
                    }
                }
            }
            if network.route_localnet {
                // The bridge routes 127.0.0.0/8 (`route_localnet`) so that the host's
                // loopback reaches its published ports; nothing arriving on it may use
                // that to reach the host's own loopback services.
                add(
                    Hook::Prerouting,
                    format!("{bridge}: guard the host's loopback from {bridge}"),
                    vec![iif(), Expr::DaddrIn(loopback()), Expr::Drop],
                );
                add(
                    Hook::Postrouting,
                    format!("{bridge}: masquerade published ports reached on the host's loopback"),
                    vec![Expr::SaddrIn(loopback()), oif(), Expr::Masquerade],
                );
            }
            for publication in &network.publications {
                let comment = format!("{bridge}: publish {publication}");
                let target = Expr::Dnat {
                    address: publication.address,
                    port: publication.port,
                };
                let ports = [
                    Expr::L4Proto(publication.protocol),
                    Expr::Dport(publication.host_port),
                ];
                let (from_outside, from_host) =
                    match (publication.host_address, publication.address) {
                        (Some(address), _) => {
                            (vec![Expr::Daddr(address)], vec![Expr::Daddr(address)])
                        }
                        // From the host itself, every local address, 127.0.0.1 included
                        // (masqueraded above, through the bridge's `route_localnet`).
                        (None, IpAddr::V4(_)) => (vec![Expr::DaddrLocal], vec![Expr::DaddrLocal]),
                        // ::1 excepted: nothing from the IPv6 loopback may leave it.
                        (None, IpAddr::V6(_)) => (
                            vec![Expr::DaddrLocal],
                            vec![
                                Expr::DaddrLocal,
                                Expr::DaddrNot(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                            ],
                        ),
                    };
                let mut exprs = from_outside;
                exprs.extend(ports.iter().cloned());
                exprs.push(target.clone());
                add(Hook::Prerouting, comment.clone(), exprs);
                let mut exprs = from_host;
                exprs.extend(ports.iter().cloned());
                exprs.push(target);
                add(Hook::Output, comment, exprs);
            }
        }
    }
    rules
}

fn loopback() -> IpNet {
    IpNet::V4(Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_round_trip_even_with_dashes_in_the_bridge_name() {
        for bridge in ["br0", "a-fwd", "lab-net.1", "x-out-pre"] {
            for hook in Hook::ALL {
                assert_eq!(
                    Hook::parse_chain(&hook.chain_of(bridge)),
                    Some((bridge, hook))
                );
            }
        }
        for base in [
            "forward",
            "postrouting",
            "prerouting",
            "output",
            "managed-by-gitvisor",
        ] {
            assert_eq!(Hook::parse_chain(base), None, "{base}");
        }
        assert_eq!(Hook::parse_chain("-fwd"), None);
    }
}
