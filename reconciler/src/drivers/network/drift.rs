//! How one bridge's network on the host differs from its declaration, computed once: the
//! plan renders it as fields ([`NetworkDrift::fields`]) and apply sends exactly its
//! requests ([`NetworkDrift::requests`]), so the two always agree.
//!
//! - **nftables**: the bridge's chains are compared rule by rule, in order, by comment
//!   and expressions (`nft.rs`: a rule edited by hand under its comment is drift, shown
//!   as "<comment> (edited by hand)"); a chain that differs is flushed and written
//!   again, one that matches is left alone.
//!   Jumps from this instance's base chains are added when missing and de-duplicated.
//!   Chains of the layout before instance ids are migrated (`instance.rs`). When no
//!   bridge this instance declares needs rules any more, a bridge whose rules are still
//!   there removes all of this instance's chains, and the whole table only when nothing
//!   of anyone else's is left in it.
//! - **forwarding**: the bridge's own switch is set as its mode needs; the uplink's is
//!   turned on (and recorded) when off, and turned back off by the change that leaves no
//!   declared bridge using it, unless another gitvisor's rules in the shared table still
//!   forward or masquerade out of it (their traffic needs the switch; the record stays).
//! - **route_localnet**: the bridge's switch is on while a port published behind it
//!   answers on the host's loopback (`publish.rs`), off otherwise.
//! - **dhcp**: the configuration file is compared with the one rendered; a dnsmasq that
//!   is not running is started, one with another configuration restarted, one no longer
//!   declared stopped and its files removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::desired::BridgeNetwork;
use super::instance::{Instance, legacy};
use super::nft::{MARKER_CHAIN, NftCommand, RuleState, TableState, Transaction};
use super::rules::{Expr, Hook, Rule};
use super::seam::{NetworkRequest, NetworkState, TableObservation};
use crate::contract::{Effect, FieldChange};

/// What the whole revision says, beyond this bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionFacts {
    /// This gitvisor's share of the table (`instance.rs`).
    pub instance: Instance,
    /// Whether any bridge this instance declares needs rules.
    pub table_needed: bool,
    /// The uplinks declared bridges need forwarding on.
    pub uplinks_in_use: BTreeSet<String>,
    /// The table holds chains of someone else's (another instance's, or a legacy chain
    /// of a bridge this instance neither declares nor owns): it stays when this
    /// instance's rules go.
    pub others_in_table: bool,
    /// The hooks whose legacy base chain holds nothing but legacy jumps of this
    /// instance's bridges: migrating removes it.
    pub legacy_bases_ours: BTreeSet<Hook>,
    /// The interfaces someone else's rules in the table forward or masquerade out of
    /// (`others_route_anywhere`: a rule of theirs that names none, out of any): their
    /// forwarding switches stay on whatever this instance recorded.
    pub others_route_out_of: BTreeSet<String>,
    pub others_route_anywhere: bool,
    /// The rules of this instance's base chains by comment, as indexes into that
    /// chain's rules in the observed table: each bridge finds its jumps by its comment
    /// instead of reading every bridge's (a scan per bridge made a plan of 10 000
    /// bridges 10^8 comparisons).
    pub base_rules: BTreeMap<Hook, HashMap<String, Vec<usize>>>,
}

impl RevisionFacts {
    /// The facts of `instance` on `host`, whose bridges (declared or owned) are
    /// `bridges`.
    pub fn new(
        instance: Instance,
        table_needed: bool,
        uplinks_in_use: BTreeSet<String>,
        bridges: &BTreeSet<String>,
        host: &NetworkState,
    ) -> RevisionFacts {
        let mut facts = RevisionFacts {
            instance,
            table_needed,
            uplinks_in_use,
            others_in_table: false,
            legacy_bases_ours: BTreeSet::new(),
            others_route_out_of: BTreeSet::new(),
            others_route_anywhere: false,
            base_rules: BTreeMap::new(),
        };
        let TableObservation::Present(table) = &host.table else {
            return facts;
        };
        for hook in Hook::ALL {
            let Some(base) = table.chains.get(&facts.instance.base_chain(hook)) else {
                continue;
            };
            let by_comment = facts.base_rules.entry(hook).or_default();
            for (index, rule) in base.rules.iter().enumerate() {
                if let Some(comment) = &rule.comment {
                    by_comment.entry(comment.clone()).or_default().push(index);
                }
            }
        }
        for hook in Hook::ALL {
            let jumps: BTreeSet<String> = bridges
                .iter()
                .map(|bridge| legacy::jump_comment(hook, bridge))
                .collect();
            if let Some(base) = table.chains.get(legacy::base_chain(hook)) {
                let ours = base
                    .rules
                    .iter()
                    .all(|rule| rule.comment.as_ref().is_some_and(|c| jumps.contains(c)));
                if ours {
                    facts.legacy_bases_ours.insert(hook);
                }
            }
        }
        let legacy_chains: BTreeSet<String> = bridges
            .iter()
            .flat_map(|bridge| Hook::ALL.map(|hook| legacy::chain_of(hook, bridge)))
            .chain(
                facts
                    .legacy_bases_ours
                    .iter()
                    .map(|hook| legacy::base_chain(*hook).to_owned()),
            )
            .collect();
        let others = |chain: &String| {
            chain != MARKER_CHAIN && !facts.instance.owns(chain) && !legacy_chains.contains(chain)
        };
        facts.others_in_table = table.chains.keys().any(others);
        let routes_out: Vec<Option<String>> = table
            .chains
            .iter()
            .filter(|(name, _)| others(name))
            .flat_map(|(_, chain)| chain.rules.iter().filter_map(RuleState::routes_out))
            .collect();
        for out in routes_out {
            match out {
                Some(interface) => {
                    facts.others_route_out_of.insert(interface);
                }
                None => facts.others_route_anywhere = true,
            }
        }
        facts
    }

    /// Whether someone else's rules in the table still send traffic out of `interface`.
    pub fn others_need(&self, interface: &str) -> bool {
        self.others_route_anywhere || self.others_route_out_of.contains(interface)
    }
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
    /// The bridge's `route_localnet` switch: what it is now (absent: no such interface
    /// yet) and what it becomes.
    pub route_localnet: Option<(Option<bool>, bool)>,
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
            route_localnet: None,
            dhcp: DhcpDrift::None,
            dhcp_now: "stopped",
        };
        drift.rules(bridge, desired, host, revision);
        drift.forwarding(desired, host, revision);
        drift.route_localnet(bridge, desired, host);
        drift.dhcp(bridge, desired, host);
        drift
    }

    pub fn is_empty(&self) -> bool {
        self.nft.is_empty()
            && self.forwarding.is_empty()
            && self.route_localnet.is_none()
            && self.dhcp == DhcpDrift::None
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
        let instance = &revision.instance;
        let present = |hook: Hook| table.chains.contains_key(&instance.chain_of(hook, bridge));
        let legacy_present = Hook::ALL
            .into_iter()
            .any(|hook| table.chains.contains_key(&legacy::chain_of(hook, bridge)));
        let mut commands = Vec::new();
        if !revision.table_needed {
            if Hook::ALL.into_iter().any(present) || legacy_present {
                self.extra_rules = Hook::ALL
                    .into_iter()
                    .flat_map(|hook| comments(table, &instance.chain_of(hook, bridge)))
                    .collect();
                if revision.others_in_table {
                    // Another instance's chains stay: only this instance's go, each
                    // removed in a form every pruned bridge can repeat.
                    let ours: Vec<&String> =
                        table.chains.keys().filter(|c| instance.owns(c)).collect();
                    for chain in &ours {
                        commands.push(NftCommand::AddChain((*chain).clone()));
                        commands.push(NftCommand::FlushChain((*chain).clone()));
                    }
                    self.migrate(&mut commands, bridge, table, revision);
                    commands.extend(ours.into_iter().map(|c| NftCommand::DeleteChain(c.clone())));
                    self.nft = Transaction(commands);
                } else {
                    self.extra_rules.extend(
                        Hook::ALL
                            .into_iter()
                            .flat_map(|hook| comments(table, &legacy::chain_of(hook, bridge))),
                    );
                    self.removes_table = true;
                    self.nft = Transaction(vec![NftCommand::DeleteTable]);
                }
            }
            return;
        }
        if legacy_present {
            self.migrate(&mut commands, bridge, table, revision);
        }
        for hook in Hook::ALL {
            let chain = instance.chain_of(hook, bridge);
            let base = instance.base_chain(hook);
            let base = base.as_str();
            let jump = instance.jump_comment(hook, bridge);
            let jump_rule = Rule {
                comment: jump.clone(),
                exprs: vec![Expr::Jump(chain.clone())],
            };
            // The jumps under this bridge's comment: those that jump where they should,
            // and those edited by hand to do something else (removed).
            let base_rules: &[RuleState] = table
                .chains
                .get(base)
                .map(|c| c.rules.as_slice())
                .unwrap_or_default();
            let (jumps, edited_jumps): (Vec<&RuleState>, Vec<&RuleState>) = revision
                .base_rules
                .get(&hook)
                .and_then(|by_comment| by_comment.get(&jump))
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|index| base_rules.get(*index))
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
                    self.extra_rules
                        .extend(comments(table, &chain).into_iter().map(|c| listed(c, hook)));
                    commands.push(NftCommand::FlushChain(chain.clone()));
                    commands.push(NftCommand::DeleteChain(chain));
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
                self.rule_differences(observed, rules, hook);
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
            setup.extend(wanted.keys().map(|hook| NftCommand::AddBaseChain {
                name: instance.base_chain(*hook),
                hook: *hook,
            }));
            setup.extend(commands);
            self.nft = Transaction(setup);
        }
    }

    /// Removes `bridge`'s chains of the legacy layout (no instance id, `instance.rs`): its
    /// jumps, its chains, and the legacy base chains that hold nothing but this
    /// instance's legacy jumps (in a form every migrating bridge can repeat).
    fn migrate(
        &mut self,
        commands: &mut Vec<NftCommand>,
        bridge: &str,
        table: &TableState,
        revision: &RevisionFacts,
    ) {
        let mut bases = Vec::new();
        for hook in Hook::ALL {
            let base = legacy::base_chain(hook);
            let Some(observed) = table.chains.get(base) else {
                continue;
            };
            if revision.legacy_bases_ours.contains(&hook) {
                commands.push(NftCommand::AddChain(base.to_owned()));
                commands.push(NftCommand::FlushChain(base.to_owned()));
                bases.push(base.to_owned());
                continue;
            }
            let jump = legacy::jump_comment(hook, bridge);
            for rule in &observed.rules {
                if rule.comment.as_deref() == Some(jump.as_str()) {
                    commands.push(NftCommand::DeleteRule {
                        chain: base.to_owned(),
                        handle: rule.handle,
                        comment: jump.clone(),
                    });
                }
            }
        }
        for hook in Hook::ALL {
            let chain = legacy::chain_of(hook, bridge);
            if table.chains.contains_key(&chain) {
                self.extra_rules.extend(
                    comments(table, &chain)
                        .into_iter()
                        .map(|c| format!("{c} (layout before instance ids)")),
                );
                commands.push(NftCommand::FlushChain(chain.clone()));
                commands.push(NftCommand::DeleteChain(chain));
            }
        }
        commands.extend(bases.into_iter().map(NftCommand::DeleteChain));
    }

    /// Names what differs between a chain's `observed` rules and the `declared` ones: a
    /// rule not declared is extra, a declared one not there is missing, and a declared
    /// one there under its comment but with other expressions (edited by hand) is both.
    fn rule_differences(&mut self, observed: &[RuleState], declared: &[Rule], hook: Hook) {
        for rule in declared {
            if observed.iter().any(|o| o.is(rule)) {
                continue;
            }
            let same_comment: Vec<&RuleState> = observed
                .iter()
                .filter(|o| o.comment.as_deref() == Some(rule.comment.as_str()))
                .collect();
            if !same_comment.is_empty() {
                let listed = listed(rule.comment.clone(), hook);
                let before = before_loopback(rule);
                let upgraded =
                    before.is_some_and(|before| same_comment.iter().all(|o| o.is(&before)));
                self.extra_rules.push(if upgraded {
                    format!("{listed} (as gitvisor wrote it before publishing on 127.0.0.1)")
                } else {
                    edited(&listed)
                });
            }
            self.missing_rules.push(listed(rule.comment.clone(), hook));
        }
        for rule in observed {
            let declared_comment = declared
                .iter()
                .any(|d| rule.comment.as_deref() == Some(d.comment.as_str()));
            if !declared_comment {
                self.extra_rules.push(listed(
                    rule.comment
                        .clone()
                        .unwrap_or_else(|| NO_COMMENT.to_owned()),
                    hook,
                ));
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
        // the uplinks no declared bridge needs any more, and no other gitvisor's rules
        // in the table route out of either: that one's traffic must keep flowing, and
        // this instance keeps its record (it turned the switch on).
        if desired.is_none() || !self.nft.is_empty() {
            for interface in &host.forwarding_enabled {
                if revision.uplinks_in_use.contains(interface)
                    || revision.others_need(interface)
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

    /// The bridge's `route_localnet` as its published ports need it; off when they do
    /// not, or when the bridge is pruned (it is gitvisor's, and off is the kernel's
    /// default). A bridge not there yet is created with it off.
    fn route_localnet(
        &mut self,
        bridge: &str,
        desired: Option<&BridgeNetwork>,
        host: &NetworkState,
    ) {
        let wanted = desired.is_some_and(|d| d.route_localnet);
        let now = host.route_localnet.get(bridge).copied();
        if now.unwrap_or(false) != wanted {
            self.route_localnet = Some((now, wanted));
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
        if let Some((old, new)) = self.route_localnet {
            fields.push(FieldChange::new("route_localnet", old, new, Effect::Hot));
        }
        let dhcp = match &self.dhcp {
            DhcpDrift::None => None,
            DhcpDrift::Start { .. } => Some(("running", Effect::Hot)),
            // dnsmasq restarts under the bridge; the bridge, its addresses and its guests'
            // leases (kept in the lease file) stay, so nothing that uses it stops.
            DhcpDrift::Restart { .. } => Some(("running", Effect::Hot)),
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
        // The switch goes on after the rules (the drop of what a guest sends to the
        // host's loopback is in place first) and off before them.
        let (localnet_off, localnet_on) = match self.route_localnet {
            Some((_, on)) => {
                let request = NetworkRequest::SetRouteLocalnet {
                    bridge: bridge.clone(),
                    on,
                };
                if on {
                    (None, Some(request))
                } else {
                    (Some(request), None)
                }
            }
            None => (None, None),
        };
        let mut requests = Vec::new();
        if teardown {
            requests.extend(dhcp);
            requests.extend(localnet_off);
            requests.extend(nft);
            requests.extend(forwarding);
        } else {
            // Rules before forwarding: an isolated bridge's drops are in place before
            // anything could be forwarded, a NAT bridge's masquerade before its
            // guests' packets leave.
            requests.extend(localnet_off);
            requests.extend(nft);
            requests.extend(localnet_on);
            requests.extend(forwarding);
            requests.extend(dhcp);
        }
        requests
    }
}

const NO_COMMENT: &str = "(a rule without comment)";

/// How the plan names a rule found under its comment with other expressions.
/// A rule as the plan lists it: its comment, and for the two chains that carry the same
/// published-port rule (DNAT of what arrives, DNAT of what this host sends), which one,
/// so a publication does not read as listed twice.
fn listed(comment: String, hook: Hook) -> String {
    match hook {
        Hook::Prerouting => format!("{comment} (arriving)"),
        Hook::Output => format!("{comment} (from this host)"),
        Hook::Forward | Hook::Postrouting => comment,
    }
}

/// The form an earlier gitvisor wrote `rule` in, when that differs: a port published
/// on every address was DNAT from the host itself on every local address but
/// 127.0.0.0/8. Recognised so that an upgrade does not read as a hand edit.
fn before_loopback(rule: &Rule) -> Option<Rule> {
    let loopback = IpNet::V4(Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).ok()?);
    let [Expr::DaddrLocal, rest @ ..] = rule.exprs.as_slice() else {
        return None;
    };
    let Some(Expr::Dnat {
        address: IpAddr::V4(_),
        ..
    }) = rest.last()
    else {
        return None;
    };
    let mut exprs = vec![Expr::DaddrLocal, Expr::DaddrNotIn(loopback)];
    exprs.extend(rest.iter().cloned());
    Some(Rule {
        comment: rule.comment.clone(),
        exprs,
    })
}

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
