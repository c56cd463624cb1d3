//! [`FakeNetwork`]: the network seam in memory, for tests. It behaves like the host:
//! an nftables transaction applies all or nothing, with the kernel's refusals (a chain
//! flushed, deleted or jumped to that does not exist, a chain deleted while it still has
//! rules or jumps); forwarding switches exist only for interfaces the links fake has; a
//! dnsmasq starts only on a written configuration. It records every request and can
//! fail chosen ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::error::SeamError;
use super::nft::{
    ChainState, Exprs, MARKER_CHAIN, NftCommand, RuleState, TableState, Transaction, listed_exprs,
};
use super::rules::{Expr, Rule};
use super::seam::{DhcpState, NetworkRequest, NetworkSeam, NetworkState, TableObservation};
use crate::drivers::bridge::FakeLinks;

type Predicate = Box<dyn Fn(&NetworkRequest) -> bool + Send + Sync>;

#[derive(Debug, Clone, Default)]
struct FakeChain {
    hook: Option<String>,
    rules: Vec<(u64, Rule)>,
}

#[derive(Debug, Default)]
struct Host {
    nft_missing: bool,
    table: Option<BTreeMap<String, FakeChain>>,
    next_handle: u64,
    forwarding: BTreeMap<String, bool>,
    route_localnet: BTreeMap<String, bool>,
    recorded: BTreeSet<String>,
    default_route: Option<String>,
    dhcp: BTreeMap<String, DhcpState>,
    next_pid: u32,
    listeners: Vec<super::seam::Listener>,
}

/// The network seam in memory.
pub struct FakeNetwork {
    links: Option<Arc<FakeLinks>>,
    host: Mutex<Host>,
    requests: Mutex<Vec<NetworkRequest>>,
    observes: Mutex<usize>,
    fail: Mutex<Option<Predicate>>,
}

impl std::fmt::Debug for FakeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeNetwork").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn enoent(what: impl Into<String>) -> SeamError {
    SeamError::Tool {
        command: "nft -j -f -".into(),
        status: "exit status: 1".into(),
        output: format!(
            "Error: Could not process rule: No such file or directory ({})",
            what.into()
        ),
    }
}

fn ebusy(what: impl Into<String>) -> SeamError {
    SeamError::Tool {
        command: "nft -j -f -".into(),
        status: "exit status: 1".into(),
        output: format!(
            "Error: Could not process rule: Device or resource busy ({})",
            what.into()
        ),
    }
}

impl FakeNetwork {
    /// A host with no table, no dnsmasq, and the interfaces of `links` (when given), each
    /// with forwarding off.
    pub fn new(links: Option<Arc<FakeLinks>>) -> Self {
        FakeNetwork {
            links,
            host: Mutex::new(Host {
                next_handle: 1,
                next_pid: 1000,
                ..Host::default()
            }),
            requests: Mutex::new(Vec::new()),
            observes: Mutex::new(0),
            fail: Mutex::new(None),
        }
    }

    /// `nft` is not installed.
    pub fn without_nft(self) -> Self {
        lock(&self.host).nft_missing = true;
        self
    }

    /// A process gitvisor did not start listens on this socket.
    pub fn listen(&self, listener: super::seam::Listener) {
        lock(&self.host).listeners.push(listener);
    }

    pub fn set_default_route(&self, interface: &str) {
        lock(&self.host).default_route = Some(interface.to_owned());
    }

    pub fn set_forwarding(&self, interface: &str, on: bool) {
        lock(&self.host).forwarding.insert(interface.to_owned(), on);
    }

    pub fn forwarding(&self, interface: &str) -> Option<bool> {
        let host = lock(&self.host);
        self.interfaces(&host)
            .contains(interface)
            .then(|| host.forwarding.get(interface).copied().unwrap_or(false))
    }

    pub fn set_route_localnet(&self, interface: &str, on: bool) {
        lock(&self.host)
            .route_localnet
            .insert(interface.to_owned(), on);
    }

    /// The interface's `route_localnet` switch (`None`: no such interface).
    pub fn route_localnet(&self, interface: &str) -> Option<bool> {
        let host = lock(&self.host);
        self.interfaces(&host)
            .contains(interface)
            .then(|| host.route_localnet.get(interface).copied().unwrap_or(false))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<NetworkRequest> {
        lock(&self.requests).clone()
    }

    pub fn observes(&self) -> usize {
        *lock(&self.observes)
    }

    /// Fails every request for which `predicate` holds.
    pub fn fail_when(&self, predicate: impl Fn(&NetworkRequest) -> bool + Send + Sync + 'static) {
        *lock(&self.fail) = Some(Box::new(predicate));
    }

    pub fn heal(&self) {
        *lock(&self.fail) = None;
    }

    /// The table's chains and their rules' comments; `None` without a table.
    pub fn table(&self) -> Option<BTreeMap<String, Vec<String>>> {
        lock(&self.host).table.as_ref().map(|chains| {
            chains
                .iter()
                .map(|(name, chain)| {
                    (
                        name.clone(),
                        chain.rules.iter().map(|(_, r)| r.comment.clone()).collect(),
                    )
                })
                .collect()
        })
    }

    /// The expressions of rule `index` of `chain` (empty when there is none).
    pub fn rule_exprs(&self, chain: &str, index: usize) -> Vec<Expr> {
        lock(&self.host)
            .table
            .as_ref()
            .and_then(|chains| chains.get(chain))
            .and_then(|chain| chain.rules.get(index))
            .map(|(_, rule)| rule.exprs.clone())
            .unwrap_or_default()
    }

    /// `nft flush table inet gitvisor`, by hand.
    pub fn flush_table(&self) {
        if let Some(chains) = lock(&self.host).table.as_mut() {
            chains.values_mut().for_each(|c| c.rules.clear());
        }
    }

    /// Deletes the rule with `comment`, by hand.
    pub fn delete_rule(&self, comment: &str) {
        if let Some(chains) = lock(&self.host).table.as_mut() {
            for chain in chains.values_mut() {
                chain.rules.retain(|(_, r)| r.comment != comment);
            }
        }
    }

    /// Edits the expressions of the first rule with `comment` by hand, keeping the
    /// comment (`nft replace rule … handle <h> … comment "<the same>"`).
    pub fn edit_rule(&self, comment: &str, edit: impl FnOnce(&mut Vec<Expr>)) {
        if let Some(chains) = lock(&self.host).table.as_mut() {
            let rule = chains
                .values_mut()
                .flat_map(|chain| chain.rules.iter_mut())
                .find(|(_, rule)| rule.comment == comment);
            if let Some((_, rule)) = rule {
                edit(&mut rule.exprs);
            }
        }
    }

    /// Edits the rule of `chain` under `comment`, by hand.
    pub fn edit_rule_in(&self, chain: &str, comment: &str, edit: impl FnOnce(&mut Vec<Expr>)) {
        let mut host = lock(&self.host);
        let rule = host
            .table
            .as_mut()
            .and_then(|chains| chains.get_mut(chain))
            .and_then(|chain| {
                chain
                    .rules
                    .iter_mut()
                    .find(|(_, rule)| rule.comment == comment)
            });
        if let Some((_, rule)) = rule {
            edit(&mut rule.exprs);
        }
    }

    /// Someone else made a table named `inet gitvisor` (no marker chain).
    pub fn foreign_table(&self) {
        lock(&self.host).table = Some(BTreeMap::from([("input".to_owned(), FakeChain::default())]));
    }

    /// The bridge's dnsmasq as it stands.
    pub fn dhcp(&self, bridge: &str) -> Option<DhcpState> {
        lock(&self.host).dhcp.get(bridge).cloned()
    }

    /// The bridge's dnsmasq dies.
    pub fn kill_dhcp(&self, bridge: &str) {
        if let Some(state) = lock(&self.host).dhcp.get_mut(bridge) {
            state.running = None;
        }
    }

    pub fn recorded_uplinks(&self) -> BTreeSet<String> {
        lock(&self.host).recorded.clone()
    }

    /// The interfaces the host has: the links fake's, or those given a forwarding
    /// switch.
    fn interfaces(&self, host: &Host) -> BTreeSet<String> {
        match &self.links {
            Some(links) => links.links().into_iter().map(|link| link.name).collect(),
            None => host.forwarding.keys().cloned().collect(),
        }
    }

    fn write_forwarding(
        &self,
        host: &mut Host,
        interface: &str,
        on: bool,
    ) -> Result<(), SeamError> {
        if !self.interfaces(host).contains(interface) {
            return Err(SeamError::File {
                operation: "writing",
                path: format!("/proc/sys/net/ipv4/conf/{interface}/forwarding").into(),
                cause: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        host.forwarding.insert(interface.to_owned(), on);
        Ok(())
    }

    fn commit(host: &mut Host, transaction: &Transaction) -> Result<(), SeamError> {
        if host.nft_missing {
            return Err(SeamError::ToolMissing {
                tool: "nft",
                package: "nftables",
            });
        }
        // Like the real seam: deleting a table that is already gone is done.
        if transaction.0 == [NftCommand::DeleteTable] && host.table.is_none() {
            return Ok(());
        }
        let mut table = host.table.clone();
        let mut next = host.next_handle;
        for command in &transaction.0 {
            match command {
                NftCommand::AddTable => {
                    table
                        .get_or_insert_with(BTreeMap::new)
                        .entry(MARKER_CHAIN.to_owned())
                        .or_default();
                }
                NftCommand::DeleteTable => {
                    if table.take().is_none() {
                        return Err(enoent("table inet gitvisor"));
                    }
                }
                other => {
                    let chains = table
                        .as_mut()
                        .ok_or_else(|| enoent("table inet gitvisor"))?;
                    match other {
                        NftCommand::AddBaseChain { name, hook } => {
                            chains.entry(name.clone()).or_insert_with(|| FakeChain {
                                hook: Some(hook.base_chain().to_owned()),
                                rules: Vec::new(),
                            });
                        }
                        NftCommand::AddChain(name) => {
                            chains.entry(name.clone()).or_default();
                        }
                        NftCommand::FlushChain(name) => {
                            chains
                                .get_mut(name)
                                .ok_or_else(|| enoent(format!("chain {name}")))?
                                .rules
                                .clear();
                        }
                        NftCommand::DeleteChain(name) => {
                            let chain = chains
                                .get(name)
                                .ok_or_else(|| enoent(format!("chain {name}")))?;
                            let jumped = chains.values().any(|c| {
                                c.rules
                                    .iter()
                                    .any(|(_, r)| r.exprs.contains(&Expr::Jump(name.clone())))
                            });
                            if !chain.rules.is_empty() || jumped {
                                return Err(ebusy(format!("chain {name}")));
                            }
                            chains.remove(name);
                        }
                        NftCommand::AddRule { chain, rule } => {
                            for expr in &rule.exprs {
                                if let Expr::Jump(target) = expr
                                    && !chains.contains_key(target)
                                {
                                    return Err(enoent(format!("chain {target}")));
                                }
                            }
                            chains
                                .get_mut(chain)
                                .ok_or_else(|| enoent(format!("chain {chain}")))?
                                .rules
                                .push((next, rule.clone()));
                            next += 1;
                        }
                        NftCommand::DeleteRule { chain, handle, .. } => {
                            let rules = &mut chains
                                .get_mut(chain)
                                .ok_or_else(|| enoent(format!("chain {chain}")))?
                                .rules;
                            let at = rules
                                .iter()
                                .position(|(h, _)| h == handle)
                                .ok_or_else(|| enoent(format!("rule handle {handle}")))?;
                            rules.remove(at);
                        }
                        NftCommand::AddTable | NftCommand::DeleteTable => {}
                    }
                }
            }
        }
        host.table = table;
        host.next_handle = next;
        Ok(())
    }
}

#[async_trait]
impl NetworkSeam for FakeNetwork {
    async fn observe(&self) -> Result<NetworkState, SeamError> {
        *lock(&self.observes) += 1;
        let host = lock(&self.host);
        let interfaces = self.interfaces(&host);
        let table = if host.nft_missing {
            TableObservation::Unavailable("`nft` is not installed".into())
        } else {
            match &host.table {
                None => TableObservation::Absent,
                Some(chains) => TableObservation::Present(TableState {
                    marked: chains.contains_key(MARKER_CHAIN),
                    chains: chains
                        .iter()
                        .map(|(name, chain)| {
                            (
                                name.clone(),
                                ChainState {
                                    hook: chain.hook.clone(),
                                    rules: chain
                                        .rules
                                        .iter()
                                        .map(|(handle, rule)| RuleState {
                                            handle: *handle,
                                            comment: Some(rule.comment.clone()),
                                            exprs: Exprs::of(&listed_exprs(rule)),
                                        })
                                        .collect(),
                                },
                            )
                        })
                        .collect(),
                }),
            }
        };
        Ok(NetworkState {
            table,
            forwarding: interfaces
                .iter()
                .map(|i| (i.clone(), host.forwarding.get(i).copied().unwrap_or(false)))
                .collect(),
            forwarding_enabled: host.recorded.clone(),
            route_localnet: interfaces
                .iter()
                .map(|i| {
                    let on = host.route_localnet.get(i).copied().unwrap_or(false);
                    (i.clone(), on)
                })
                .collect(),
            default_route: host.default_route.clone(),
            dhcp: host.dhcp.clone(),
            listeners: host.listeners.clone(),
        })
    }

    async fn send(&self, request: &NetworkRequest) -> Result<(), SeamError> {
        lock(&self.requests).push(request.clone());
        if lock(&self.fail).as_ref().is_some_and(|fail| fail(request)) {
            return Err(SeamError::Injected);
        }
        let mut host = lock(&self.host);
        match request {
            NetworkRequest::Nft(transaction) => Self::commit(&mut host, transaction),
            NetworkRequest::SetForwarding { interface, on } => {
                self.write_forwarding(&mut host, interface, *on)
            }
            NetworkRequest::SetRouteLocalnet { bridge, on } => {
                if !self.interfaces(&host).contains(bridge) {
                    return Err(SeamError::File {
                        operation: "writing",
                        path: format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet").into(),
                        cause: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
                host.route_localnet.insert(bridge.clone(), *on);
                Ok(())
            }
            NetworkRequest::EnableUplinkForwarding { interface } => {
                host.recorded.insert(interface.clone());
                self.write_forwarding(&mut host, interface, true)
            }
            NetworkRequest::RestoreUplinkForwarding { interface } => {
                if self.interfaces(&host).contains(interface) {
                    host.forwarding.insert(interface.clone(), false);
                }
                host.recorded.remove(interface);
                Ok(())
            }
            NetworkRequest::WriteDhcpConfig { bridge, config } => {
                host.dhcp.entry(bridge.clone()).or_default().config = Some(config.clone());
                Ok(())
            }
            NetworkRequest::StartDhcp { bridge } => {
                let pid = host.next_pid;
                let state = host
                    .dhcp
                    .get_mut(bridge)
                    .filter(|s| s.config.is_some())
                    .ok_or(SeamError::Tool {
                        command: format!("dnsmasq for {bridge}"),
                        status: "exit status: 1".into(),
                        output: "dnsmasq: cannot read the configuration file".into(),
                    })?;
                if state.running.is_none() {
                    state.running = Some(pid);
                    host.next_pid += 1;
                }
                Ok(())
            }
            NetworkRequest::StopDhcp { bridge, pid } => {
                if let Some(state) = host.dhcp.get_mut(bridge)
                    && state.running == Some(*pid)
                {
                    state.running = None;
                }
                Ok(())
            }
            NetworkRequest::RemoveDhcp { bridge } => {
                host.dhcp.remove(bridge);
                Ok(())
            }
        }
    }
}
