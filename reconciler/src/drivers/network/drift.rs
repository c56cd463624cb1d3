//! How one bridge's network on the host differs from its declaration, computed once: the
//! plan renders it as fields ([`NetworkDrift::fields`]) and apply sends exactly its
//! requests ([`NetworkDrift::requests`]), so the two always agree.
//!
//! - **nftables**: the bridge's chains are compared rule by rule, in order, by comment
//!   and expressions (`nft.rs`: a rule edited by hand under its comment is drift, shown
//!   as "<comment> (edited by hand)"); a chain that differs is flushed and written
//!   again, one that matches is left alone.
//!   Jumps from the base chains are added when missing and de-duplicated. When no
//!   declared bridge needs the table any more, the bridge whose rules are the last in
//!   it deletes the whole table instead.
//! - **forwarding**: the bridge's own switch is set as its mode needs; the uplink's is
//!   turned on (and recorded) when off, and turned back off by the change that leaves no
//!   declared bridge using it.
//! - **dhcp**: the configuration file is compared with the one rendered; a dnsmasq that
//!   is not running is started, one with another configuration restarted, one no longer
//!   declared stopped and its files removed.

use std::collections::BTreeSet;

use super::desired::BridgeNetwork;
use super::nft::{NftCommand, RuleState, TableState, Transaction};
use super::rules::{Expr, Hook, Rule};
use super::seam::{NetworkRequest, NetworkState, TableObservation};
use crate::contract::{Effect, FieldChange};

/// What the whole revision says, beyond this bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionFacts {
    /// Whether any declared bridge needs gitvisor's table.
    pub table_needed: bool,
    /// The uplinks declared bridges need forwarding on.
    pub uplinks_in_use: BTreeSet<String>,
}

/// What happens to the bridge's dnsmasq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpDrift {
    None,
    /// Write the configuration (when it differs) and start.
    Start {
        write: Option<String>,
    },
    /// Write the new configuration, stop the running one, start again.
    Restart {
        config: String,
        pid: u32,
    },
    /// Stop (when running) and remove its files.
    Remove {
        pid: Option<u32>,
    },
}

/// The drift of one bridge's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDrift {
    pub bridge: String,
    /// The transaction that closes the rules' drift (empty: none).
    pub nft: Transaction,
    /// Rules (by comment) on the host and not declared, and declared and missing.
    pub extra_rules: Vec<String>,
    pub missing_rules: Vec<String>,
    /// The table goes: no declared bridge needs it.
    pub removes_table: bool,
    /// Forwarding switches to set: interface, what it is now (absent: no such interface
    /// yet), what it becomes, whether it is an uplink.
    pub forwarding: Vec<ForwardingChange>,
    pub dhcp: DhcpDrift,
    /// What the dnsmasq state is now, in words, for the plan.
    pub dhcp_now: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingChange {
    pub interface: String,
    pub old: Option<bool>,
    pub new: bool,
    pub uplink: bool,
}

impl NetworkDrift {
    /// The drift of `bridge`, declared as `desired` (`None`: pruned), on `host`.
    /// `after_link`: whether the bridge's own link exists once the link part is applied
    /// (a bridge being created has no forwarding switch to read yet).
    pub fn between(
        bridge: &str,
        desired: Option<&BridgeNetwork>,
        host: &NetworkState,
        revision: &RevisionFacts,
    ) -> NetworkDrift {
        let mut drift = NetworkDrift {
            bridge: bridge.to_owned(),
            nft: Transaction::default(),
            extra_rules: Vec::new(),
            missing_rules: Vec::new(),
            removes_table: false,
            forwarding: Vec::new(),
            dhcp: DhcpDrift::None,
            dhcp_now: "stopped",
        };
        drift.rules(bridge, desired, host, revision);
        drift.forwarding(desired, host, revision);
        drift.dhcp(bridge, desired, host);
        drift
    }

    pub fn is_empty(&self) -> bool {
        self.nft.is_empty() && self.forwarding.is_empty() && self.dhcp == DhcpDrift::None
    }

    fn rules(
        &mut self,
        bridge: &str,
        desired: Option<&BridgeNetwork>,
        host: &NetworkState,
        revision: &RevisionFacts,
    ) {
        let wanted = desired.map(BridgeNetwork::rules).unwrap_or_default();
        let empty = TableState::default();
        let table = match &host.table {
            TableObservation::Present(table) if table.marked => table,
            // Someone else's table under gitvisor's name is never touched (the driver
            // refuses the plan when rules are needed); an absent or unreadable one has
            // nothing of this bridge's.
            _ => &empty,
        };
        let present = |hook: Hook| table.chains.contains_key(&hook.chain_of(bridge));
        if !revision.table_needed {
            if Hook::ALL.into_iter().any(present) {
                self.extra_rules = Hook::ALL
                    .into_iter()
                    .flat_map(|hook| comments(table, &hook.chain_of(bridge)))
                    .collect();
                self.removes_table = true;
                self.nft = Transaction(vec![NftCommand::DeleteTable]);
            }
            return;
        }
        let mut commands = Vec::new();
        for hook in Hook::ALL {
            let chain = hook.chain_of(bridge);
            let base = hook.base_chain();
            let jump = hook.jump_comment(bridge);
            let jump_rule = Rule {
                comment: jump.clone(),
                exprs: vec![Expr::Jump(chain.clone())],
            };
            // The jumps under this bridge's comment: those that jump where they should,
            // and those edited by hand to do something else (removed).
            let (jumps, edited_jumps): (Vec<&RuleState>, Vec<&RuleState>) = table
                .chains
                .get(base)
                .map(|c| {
                    c.rules
                        .iter()
                        .filter(|r| r.comment.as_deref() == Some(jump.as_str()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .into_iter()
                .partition(|r| r.is(&jump_rule));
            let observed: &[RuleState] = table
                .chains
                .get(&chain)
                .map(|c| c.rules.as_slice())
                .unwrap_or_default();
            let rules: &[Rule] = wanted.get(&hook).map(Vec::as_slice).unwrap_or_default();
            if rules.is_empty() {
                if present(hook) {
                    for rule in jumps.iter().chain(&edited_jumps) {
                        commands.push(NftCommand::DeleteRule {
                            chain: base.to_owned(),
                            handle: rule.handle,
                            comment: jump.clone(),
                        });
                    }
                    commands.push(NftCommand::FlushChain(chain.clone()));
                    commands.push(NftCommand::DeleteChain(chain));
                    self.extra_rules
                        .extend(comments(table, &hook.chain_of(bridge)));
                }
                continue;
            }
            let same =
                observed.len() == rules.len() && observed.iter().zip(rules).all(|(o, r)| o.is(r));
            if !present(hook) || !same {
                commands.push(NftCommand::AddChain(chain.clone()));
                commands.push(NftCommand::FlushChain(chain.clone()));
                for rule in rules {
                    commands.push(NftCommand::AddRule {
                        chain: chain.clone(),
                        rule: rule.clone(),
                    });
                }
                self.rule_differences(observed, rules);
                if self.extra_rules.is_empty() && self.missing_rules.is_empty() {
                    self.missing_rules
                        .push(format!("{chain}: the rules in their declared order"));
                }
            }
            for rule in &edited_jumps {
                commands.push(NftCommand::DeleteRule {
                    chain: base.to_owned(),
                    handle: rule.handle,
                    comment: jump.clone(),
                });
                self.extra_rules.push(edited(&jump));
            }
            match jumps.as_slice() {
                [] => {
                    commands.push(NftCommand::AddRule {
                        chain: base.to_owned(),
                        rule: jump_rule,
                    });
                    self.missing_rules.push(jump);
                }
                [_] => {}
                [_, duplicates @ ..] => {
                    for rule in duplicates {
                        commands.push(NftCommand::DeleteRule {
                            chain: base.to_owned(),
                            handle: rule.handle,
                            comment: jump.clone(),
                        });
                        self.extra_rules.push(jump.clone());
                    }
                }
            }
        }
        if !commands.is_empty() {
            let mut setup = vec![NftCommand::AddTable];
            setup.extend(wanted.keys().map(|hook| NftCommand::AddBaseChain(*hook)));
            setup.extend(commands);
            self.nft = Transaction(setup);
        }
    }

    /// Names what differs between a chain's `observed` rules and the `declared` ones: a
    /// rule not declared is extra, a declared one not there is missing, and a declared
    /// one there under its comment but with other expressions (edited by hand) is both.
    fn rule_differences(&mut self, observed: &[RuleState], declared: &[Rule]) {
        for rule in declared {
            if observed.iter().any(|o| o.is(rule)) {
                continue;
            }
            if observed
                .iter()
                .any(|o| o.comment.as_deref() == Some(rule.comment.as_str()))
            {
                self.extra_rules.push(edited(&rule.comment));
            }
            self.missing_rules.push(rule.comment.clone());
        }
        for rule in observed {
            let declared_comment = declared
                .iter()
                .any(|d| rule.comment.as_deref() == Some(d.comment.as_str()));
            if !declared_comment {
                self.extra_rules.push(
                    rule.comment
                        .clone()
                        .unwrap_or_else(|| NO_COMMENT.to_owned()),
                );
            }
        }
    }

    fn forwarding(
        &mut self,
        desired: Option<&BridgeNetwork>,
        host: &NetworkState,
        revision: &RevisionFacts,
    ) {
        if let Some(desired) = desired {
            for (interface, &on) in &desired.forwarding {
                let old = host.forwarding.get(interface).copied();
                let uplink = desired.uplink_forwarding.as_deref() == Some(interface.as_str());
                // An uplink already forwarding is left as it is (and not recorded):
                // gitvisor did not turn it on, so it never turns it off.
                let differs = if uplink {
                    old != Some(true)
                } else {
                    old != Some(on)
                };
                if differs {
                    self.forwarding.push(ForwardingChange {
                        interface: interface.clone(),
                        old,
                        new: on,
                        uplink,
                    });
                }
            }
        }
        // The change that removes this bridge's rules, or the bridge itself, gives back
        // the uplinks no declared bridge needs any more.
        if desired.is_none() || !self.nft.is_empty() {
            for interface in &host.forwarding_enabled {
                if revision.uplinks_in_use.contains(interface)
                    || self.forwarding.iter().any(|f| &f.interface == interface)
                {
                    continue;
                }
                self.forwarding.push(ForwardingChange {
                    interface: interface.clone(),
                    old: host.forwarding.get(interface).copied(),
                    new: false,
                    uplink: true,
                });
            }
        }
    }

    fn dhcp(&mut self, bridge: &str, desired: Option<&BridgeNetwork>, host: &NetworkState) {
        let observed = host.dhcp.get(bridge);
        let running = observed.and_then(|d| d.running);
        let current = observed.and_then(|d| d.config.as_deref());
        let wanted = desired.and_then(|d| d.dhcp.as_deref());
        self.dhcp_now = match (running, current == wanted) {
            (Some(_), true) => "running",
            (Some(_), false) => "running with another configuration",
            (None, _) => "stopped",
        };
        self.dhcp = match (wanted, running) {
            (Some(config), Some(pid)) if current != Some(config) => DhcpDrift::Restart {
                config: config.to_owned(),
                pid,
            },
            (Some(_), Some(_)) => DhcpDrift::None,
            (Some(config), None) => DhcpDrift::Start {
                write: (current != Some(config)).then(|| config.to_owned()),
            },
            (None, pid) if observed.is_some() => DhcpDrift::Remove { pid },
            (None, _) => DhcpDrift::None,
        };
    }

    /// The plan's fields for this drift.
    pub fn fields(&self) -> Vec<FieldChange> {
        let mut fields = Vec::new();
        if !self.nft.is_empty() {
            let mut new = self.missing_rules.clone();
            if self.removes_table {
                new = Vec::new();
            }
            fields.push(FieldChange::new(
                "nftables",
                self.extra_rules.clone(),
                new,
                Effect::Hot,
            ));
        }
        for change in &self.forwarding {
            fields.push(FieldChange::new(
                format!("forwarding.{}", change.interface),
                change.old,
                change.new,
                Effect::Hot,
            ));
        }
        let dhcp = match &self.dhcp {
            DhcpDrift::None => None,
            DhcpDrift::Start { .. } => Some(("running", Effect::Hot)),
            DhcpDrift::Restart { .. } => Some(("running", Effect::Restart)),
            DhcpDrift::Remove { .. } => Some(("removed", Effect::Hot)),
        };
        if let Some((new, effect)) = dhcp {
            fields.push(FieldChange::new("dhcp", self.dhcp_now, new, effect));
        }
        fields
    }

    /// Reasons for the plan that the fields do not say.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.removes_table {
            reasons.push(
                "removes nftables table inet gitvisor: no declared bridge needs it any more"
                    .to_owned(),
            );
        }
        reasons
    }

    /// The requests that close this drift, in order. `teardown`: the bridge goes away
    /// (its dnsmasq stops first, while the bridge still exists).
    pub fn requests(&self, teardown: bool) -> Vec<NetworkRequest> {
        let bridge = self.bridge.clone();
        let mut dhcp = Vec::new();
        match &self.dhcp {
            DhcpDrift::None => {}
            DhcpDrift::Start { write } => {
                if let Some(config) = write {
                    dhcp.push(NetworkRequest::WriteDhcpConfig {
                        bridge: bridge.clone(),
                        config: config.clone(),
                    });
                }
                dhcp.push(NetworkRequest::StartDhcp {
                    bridge: bridge.clone(),
                });
            }
            DhcpDrift::Restart { config, pid } => {
                dhcp.push(NetworkRequest::WriteDhcpConfig {
                    bridge: bridge.clone(),
                    config: config.clone(),
                });
                dhcp.push(NetworkRequest::StopDhcp {
                    bridge: bridge.clone(),
                    pid: *pid,
                });
                dhcp.push(NetworkRequest::StartDhcp {
                    bridge: bridge.clone(),
                });
            }
            DhcpDrift::Remove { pid } => {
                if let Some(pid) = pid {
                    dhcp.push(NetworkRequest::StopDhcp {
                        bridge: bridge.clone(),
                        pid: *pid,
                    });
                }
                dhcp.push(NetworkRequest::RemoveDhcp {
                    bridge: bridge.clone(),
                });
            }
        }
        let nft = (!self.nft.is_empty()).then(|| NetworkRequest::Nft(self.nft.clone()));
        let forwarding = self.forwarding.iter().map(|change| {
            let interface = change.interface.clone();
            match (change.uplink, change.new) {
                (false, on) => NetworkRequest::SetForwarding { interface, on },
                (true, true) => NetworkRequest::EnableUplinkForwarding { interface },
                (true, false) => NetworkRequest::RestoreUplinkForwarding { interface },
            }
        });
        let mut requests = Vec::new();
        if teardown {
            requests.extend(dhcp);
            requests.extend(nft);
            requests.extend(forwarding);
        } else {
            // Rules before forwarding: an isolated bridge's drops are in place before
            // anything could be forwarded, a NAT bridge's masquerade before its
            // guests' packets leave.
            requests.extend(nft);
            requests.extend(forwarding);
            requests.extend(dhcp);
        }
        requests
    }
}

const NO_COMMENT: &str = "(a rule without comment)";

/// How the plan names a rule found under its comment with other expressions.
fn edited(comment: &str) -> String {
    format!("{comment} (edited by hand)")
}

fn comments(table: &TableState, chain: &str) -> Vec<String> {
    table
        .chains
        .get(chain)
        .map(|c| {
            c.rules
                .iter()
                .map(|r| r.comment.clone().unwrap_or_else(|| NO_COMMENT.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}
