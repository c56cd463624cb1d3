//! Managed bridges as complete guest networks: NAT, routing or host-only isolation,
//! published ports, DHCP and DNS (`docs/network.md`).
//!
//! # Why it looks like this
//!
//! A Bridge is one resource, so its link (the Bridge driver, `drivers/bridge/`) and its
//! network (this module) are planned and applied as one change: [`ManagedBridgeDriver`]
//! is the `kind: Bridge` driver of the registry, wrapping the Bridge driver and adding
//! what the network needs to the same change (fields `nftables`, `forwarding.<if>`,
//! `route_localnet`, `dhcp`). The Bridge driver stays about links; this module never
//! touches a link.
//!
//! - **nftables**: every rule lives in one table, `inet gitvisor`, changed only through
//!   `nft -j` JSON, one transaction per bridge change (`nft.rs`, `rules.rs`). The table
//!   is shared by every gitvisor on the host; each owns only chains named with its
//!   instance id, derived from its state dir (`instance.rs`). Each bridge has its own
//!   chains jumped to from the instance's base chains, so a change replaces exactly that
//!   bridge's rules and bridges apply in parallel. The transactions of every
//!   bridge an apply creates or updates go in one `nft` run (`batch.rs`), since `nft`
//!   reloads the table for each run; deletes stay their own. Other tables are never
//!   read, named or flushed. The table is gitvisor's when it holds the chain
//!   `managed-by-gitvisor`; a table of that name without it is a conflict. When no
//!   bridge this instance declares needs rules any more, the change that removes the
//!   last bridge's rules removes this instance's chains, and deletes the whole table
//!   only when no one else's chains are left in it.
//! - **forwarding**: the bridge's own IPv4 `forwarding` switch (on for NAT and routed,
//!   off for isolated), and the uplink's when it is off (turned on, recorded under the
//!   run dir, and turned back off when no declared bridge uses it and no other
//!   gitvisor's rules in the table route out of it); never the global `ip_forward`.
//!   The bridge's own `route_localnet` is on while a port published behind it answers
//!   on the host's 127.0.0.1, off otherwise (the bridge is gitvisor's, so is the switch).
//! - **dnsmasq**: one per bridge with `dhcp:`, configuration and pid file under
//!   `<run-dir>/network/dhcp/<bridge>/`, detached from gitvisor so guests keep their
//!   DHCP and DNS while gitvisor restarts or upgrades, and found again through its pid
//!   file and command line (`dnsmasq.rs`). A dnsmasq that died is started again by the
//!   next plan/apply (the controller's resync: nothing announces its end to the watch),
//!   so it is supervised at the resync interval.
//!
//! # Ownership
//!
//! The bridge's link follows the Bridge driver's rules (marker and store record). What
//! this module creates is derived from the bridge and carries gitvisor's marks of its
//! own: the table's marker chain, the chains named with this instance's id (another
//! gitvisor's chains in the shared table are never changed), the rules' comments naming
//! the bridge, the dnsmasq
//! configuration's first line and the `--conf-file` in its command line, the uplink
//! records. A dnsmasq is signalled only when its command line names the bridge's
//! configuration under this run dir. Leftovers of a bridge the store still records but
//! that is no longer declared are removed by a `Delete` even when its link is gone.
//!
//! # Order of steps
//!
//! 1. **plan**: the Bridge driver's plan and one network observation
//!    ([`NetworkSeam::observe`]: the table, every forwarding switch, the default route,
//!    the dnsmasq directories) run together; per bridge the declared network
//!    (`desired.rs`) and its drift (`drift.rs`) are computed once and joined to the
//!    link's change.
//! 2. **prepare**: the creates and updates the run carries out join their nftables
//!    transactions into one round (`batch.rs`).
//! 3. **apply** create/update: the link first (the Bridge driver), then the bridge's
//!    nftables transaction (the round's one `nft` run, started by the first bridge to get
//!    here and awaited by the others), forwarding switches, dnsmasq (configuration, stop,
//!    start).
//!    **delete**: dnsmasq, rules and uplink forwarding first, while the bridge exists,
//!    then the link. The step's context is checked before every request.
//!
//! # Watching
//!
//! In the controller the driver watches the kernel's announcements of links, addresses
//! and nftables changes (`watch.rs`) and, while it does, plans from its last observation
//! (links and network, [`ObservationCache`]) until the watch or its own apply says the
//! host changed; the resync observes again (a dnsmasq that died is seen then).
//!
//! # Seam
//!
//! [`NetworkSeam`]: [`HostNetwork`] for real (`nft`, `dnsmasq`, `/proc/sys`),
//! [`FakeNetwork`] in tests.

mod batch;
mod desired;
mod dnsmasq;
mod drift;
mod error;
pub mod fake;
mod generation;
pub mod host;
pub mod instance;
mod kind;
mod leases;
pub mod nft;
pub mod probe;
pub mod publish;
mod rules;
pub mod seam;
pub(crate) mod validate;
mod watch;

use crate::drivers::bridge::BridgeSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::contract::cache::Invalidate;
use crate::contract::{
    Action, Change, ContractViolation, Driver, DriverError, ObservationCache, PlanContext,
    StepContext, WatchSink, Watching,
};
use crate::drivers::bridge::BridgeDriver;
use crate::model::{Kind, Resource};

pub use batch::{NftBatch, Round};
pub use desired::{BridgeNetwork, Mode};
pub use dnsmasq::{DhcpPaths, Lease, parse_leases};
pub use drift::NetworkDrift;
pub use error::{NetworkError, SeamError};
pub use fake::FakeNetwork;
pub use host::HostNetwork;
pub use instance::Instance;
pub use kind::REGISTRATION;
pub(crate) use leases::LEASES_TABLE;
pub use leases::{LeaseError, Leases, leases_json, read_leases};
pub use publish::Publication;
pub use seam::{NetworkRequest, NetworkSeam, NetworkState, TableObservation};

use drift::RevisionFacts;

/// The network module's directory under the run dir.
pub fn network_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("network")
}

/// What a managed bridge's change carries from plan to apply: the link part's own
/// change (when the link has one), the network's drift, and the nftables batch every
/// change of the plan shares (`batch.rs`).
#[derive(Debug)]
pub struct ManagedSnapshot {
    pub link: Option<Change>,
    pub network: NetworkDrift,
    pub batch: Arc<NftBatch>,
}

/// The `kind: Bridge` driver: the Bridge driver's links plus each bridge's network.
#[derive(Clone)]
pub struct ManagedBridgeDriver {
    links: BridgeDriver,
    network: Arc<dyn NetworkSeam>,
    dir: PathBuf,
    instance: Instance,
    /// The last network observation, reused while the watch (`watch.rs`) heard of no
    /// change and no apply ran since ([`ObservationCache`]).
    cache: Arc<ObservationCache<NetworkState>>,
}

impl std::fmt::Debug for ManagedBridgeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedBridgeDriver")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ManagedBridgeDriver {
    /// A driver over any seams; `network_dir` is where dnsmasq configurations live,
    /// `instance` this gitvisor's share of the nftables table.
    pub fn new(
        links: BridgeDriver,
        network: Arc<dyn NetworkSeam>,
        network_dir: PathBuf,
        instance: Instance,
    ) -> Self {
        ManagedBridgeDriver {
            links,
            network,
            dir: network_dir,
            instance,
            cache: Arc::new(ObservationCache::new()),
        }
    }

    /// The registry's constructor: netlink for links, the host for the rest.
    pub(crate) fn connect_driver(
        settings: &crate::drivers::HostSettings,
    ) -> Result<Box<dyn Driver>, DriverError> {
        let dir = network_dir(&settings.run_dir);
        Ok(Box::new(ManagedBridgeDriver::new(
            BridgeDriver::connect()?,
            Arc::new(HostNetwork::new(dir.clone())),
            dir,
            Instance::of_state_dir(&settings.state_dir),
        )))
    }

    /// Commits `round`, the nftables transactions of every bridge of this apply joined
    /// (`batch.rs`), or awaits the commit another bridge's step started. `false` when
    /// the joined transaction failed: this bridge then commits its own.
    async fn commit_round(
        &self,
        bridge: &str,
        round: &Round,
        step: &StepContext,
    ) -> Result<bool, NetworkError> {
        let interrupted = |cause| NetworkError::Interrupted {
            bridge: bridge.to_owned(),
            operation: format!(
                "{} (joined with the other {} bridges of this apply)",
                round.transaction(),
                round.members().len() - 1
            ),
            cause,
        };
        // The other bridges' steps go on meanwhile: this one lends its executor slot.
        step.wait_off_slot(round.commit(self.network.clone()))
            .await
            .map_err(interrupted)
    }

    async fn send_all(
        &self,
        bridge: &str,
        requests: Vec<NetworkRequest>,
        step: &StepContext,
    ) -> Result<(), NetworkError> {
        for request in requests {
            let operation = request.to_string();
            step.check().map_err(|cause| NetworkError::Interrupted {
                bridge: bridge.to_owned(),
                operation: operation.clone(),
                cause,
            })?;
            tracing::debug!(bridge, "{operation}");
            self.network
                .send(&request)
                .await
                .map_err(|cause| NetworkError::Request {
                    bridge: bridge.to_owned(),
                    operation,
                    cause,
                })?;
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for ManagedBridgeDriver {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let (links, host) = futures::join!(
            self.links.plan(desired, context),
            self.cache.get_or_observe(|| self.network.observe())
        );
        let links = links?;
        let host = host.map_err(|cause| NetworkError::Observe { cause })?;
        let host = host.as_ref();

        let mut networks = BTreeMap::new();
        for resource in desired {
            let Some(spec) = resource.spec.get::<BridgeSpec>() else {
                return Err(ContractViolation {
                    id: resource.id(),
                    message: "the bridge driver was handed a resource of another kind".into(),
                }
                .into());
            };
            let name = &resource.metadata.name;
            let network = BridgeNetwork::new(
                name,
                spec,
                context,
                host.default_route.as_deref(),
                &self.dir,
            );
            if network.needs_rules()
                && let TableObservation::Unavailable(why) = &host.table
            {
                return Err(NetworkError::NftUnavailable {
                    bridge: name.to_string(),
                    mode: network.mode.word(),
                    why: why.clone(),
                }
                .into());
            }
            networks.insert(name.to_string(), network);
        }
        let bridges: BTreeSet<String> = networks
            .keys()
            .cloned()
            .chain(
                context
                    .owned
                    .iter()
                    .filter(|id| id.kind == Kind::Bridge)
                    .map(|id| id.name.to_string()),
            )
            .collect();
        let revision = RevisionFacts::new(
            self.instance.clone(),
            networks.values().any(BridgeNetwork::needs_rules),
            networks
                .values()
                .filter_map(|n| n.uplink_forwarding.clone())
                .collect(),
            &bridges,
            host,
        );
        let foreign_table = matches!(&host.table, TableObservation::Present(t) if !t.marked);

        let batch = Arc::new(NftBatch::default());
        let mut changes = Vec::with_capacity(links.len());
        let mut planned = BTreeSet::new();
        for link in links {
            let name = link.id.name.to_string();
            planned.insert(name.clone());
            let network = networks.get(&name);
            match link.action {
                Action::Conflict | Action::Unsupported => changes.push(link),
                // A targeted reconcile's bridge that did not change: its link was carried
                // (not diffed), and so is its network. The revision-wide facts above
                // still come from every declared bridge.
                _ if !context.in_focus(&link.id) => changes.push(link),
                _ if foreign_table && network.is_some_and(BridgeNetwork::needs_rules) => {
                    changes.push(Change {
                        action: Action::Conflict,
                        ..link
                    }
                    .with_reason(format!(
                        "an nftables table inet gitvisor exists without gitvisor's marker chain {}; gitvisor will not touch it: rename or delete it (nft delete table inet gitvisor) and plan again",
                        nft::MARKER_CHAIN
                    )));
                }
                _ => {
                    let taken = network
                        .map(|n| taken_ports(n, &networks, host, context))
                        .unwrap_or_default();
                    if !taken.is_empty() {
                        let mut refused = Change {
                            action: Action::Unsupported,
                            ..link
                        };
                        refused.fields.clear();
                        refused.reasons = taken;
                        changes.push(refused);
                        continue;
                    }
                    let drift = NetworkDrift::between(&name, network, host, &revision);
                    changes.push(join(link, drift, batch.clone()));
                }
            }
        }
        // A bridge the store still records, no longer declared and whose link is gone,
        // may still have rules or a dnsmasq: those go on their own. When a link of that
        // name exists that is not gitvisor's (made again by hand), nothing is planned
        // for that name: no change may name an object gitvisor does not own.
        for id in &context.owned {
            let name = id.name.to_string();
            if id.kind != Kind::Bridge || networks.contains_key(&name) || planned.contains(&name) {
                continue;
            }
            let drift = NetworkDrift::between(&name, None, host, &revision);
            if drift.is_empty() {
                continue;
            }
            if host.forwarding.contains_key(&name) {
                tracing::warn!(
                    bridge = %name,
                    "the rules or dnsmasq gitvisor made for bridge {name} stay: a link of that name exists that gitvisor does not own"
                );
                continue;
            }
            let mut change = Change::new(id.clone(), Action::Delete)
                .with_reason("no longer declared; its network (rules, dnsmasq) is still there")
                .with_fields(drift.fields());
            for reason in drift.reasons() {
                change = change.with_reason(reason);
            }
            changes.push(change.with_observed(ManagedSnapshot {
                link: None,
                network: drift,
                batch: batch.clone(),
            }));
        }
        Ok(changes)
    }

    /// Joins the nftables transactions of the creates, updates and replaces this run
    /// carries out into one round per plan (`batch.rs`).
    fn prepare_apply(&self, changes: &[&Change]) {
        let mut rounds: Vec<(Arc<NftBatch>, Vec<batch::Member>)> = Vec::new();
        for change in changes {
            if !matches!(
                change.action,
                Action::Create | Action::Update | Action::Replace
            ) {
                continue;
            }
            let Some(snapshot) = change.observed_as::<ManagedSnapshot>() else {
                continue;
            };
            let index = match rounds
                .iter()
                .position(|(batch, _)| Arc::ptr_eq(batch, &snapshot.batch))
            {
                Some(index) => index,
                None => {
                    rounds.push((snapshot.batch.clone(), Vec::new()));
                    rounds.len() - 1
                }
            };
            if batch::joinable(&snapshot.network.nft) {
                rounds[index]
                    .1
                    .push((change.id.name.to_string(), snapshot.network.nft.clone()));
            }
        }
        for (batch, members) in rounds {
            batch.begin(members);
        }
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        // Whatever the apply does (even part of it), the host is not what was observed.
        self.cache.invalidate();
        let applied = self.apply_change(change, step).await;
        self.cache.invalidate();
        applied
    }

    fn watch(&self, sink: WatchSink) -> Result<Watching, DriverError> {
        Ok(watch::start(sink, self.caches(), self.instance.clone())?)
    }
}

impl ManagedBridgeDriver {
    /// The observation caches a plan reads through: the links' and the network's.
    fn caches(&self) -> Vec<Arc<dyn Invalidate>> {
        vec![self.links.observation_cache(), self.cache.clone()]
    }

    async fn apply_change(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        let bridge = change.id.name.to_string();
        let Some(snapshot) = change.observed_as::<ManagedSnapshot>() else {
            if change.action.is_change() {
                return Err(NetworkError::InvalidChange {
                    bridge,
                    reason: "it carries no managed-bridge snapshot".into(),
                }
                .into());
            }
            return Ok(());
        };
        let link = snapshot.link.as_ref().filter(|l| l.action.is_change());
        match change.action {
            Action::Delete => {
                self.send_all(&bridge, snapshot.network.requests(true), step)
                    .await?;
                if let Some(link) = link {
                    self.links.apply(link, step).await?;
                }
            }
            Action::Create | Action::Update | Action::Replace => {
                if let Some(link) = link {
                    self.links.apply(link, step).await?;
                }
                let mut requests = snapshot.network.requests(false);
                if let Some(round) = snapshot.batch.round_of(&bridge)
                    && self.commit_round(&bridge, &round, step).await?
                {
                    requests.retain(|r| !matches!(r, NetworkRequest::Nft(_)));
                }
                self.send_all(&bridge, requests, step).await?;
            }
            Action::NoOp | Action::Conflict | Action::Unsupported => {}
        }
        Ok(())
    }
}

/// The link's change with the network's drift added: fields after the link's, an
/// update when only the network differs.
/// The new publications of `network` whose host port a socket already listens on, as
/// refusals at the field that declares each (`file:line:col: spec.network.publish[0]`):
/// the DNAT would take that listener's traffic. A publication whose rules are in place
/// is not judged again (its port is gitvisor's), nor is a listener on a managed bridge's
/// own subnet (the bridge's dnsmasq).
fn taken_ports(
    network: &BridgeNetwork,
    networks: &BTreeMap<String, BridgeNetwork>,
    host: &NetworkState,
    context: &PlanContext,
) -> Vec<String> {
    if network.publications.is_empty() {
        // Nothing published: nothing to judge, and no need to index every rule of the
        // table (once per bridge, that was most of a no-op plan of 1000 bridges).
        return Vec::new();
    }
    let installed: BTreeSet<&str> = match &host.table {
        TableObservation::Present(table) => table
            .chains
            .values()
            .flat_map(|chain| chain.rules.iter())
            .filter_map(|rule| rule.comment.as_deref())
            .collect(),
        _ => BTreeSet::new(),
    };
    let managed = |address: &std::net::IpAddr| match address {
        std::net::IpAddr::V4(v4) => networks
            .values()
            .any(|n| n.subnets.iter().any(|subnet| subnet.contains(v4))),
        std::net::IpAddr::V6(_) => false,
    };
    let mut refusals = Vec::new();
    for publication in &network.publications {
        let comment = format!("{}: publish {publication}", network.bridge);
        if installed.contains(comment.as_str()) {
            continue;
        }
        let Some(listener) = host.listeners.iter().find(|listener| {
            listener.protocol == publication.protocol
                && listener.port == publication.host_port
                && !managed(&listener.address)
                && (listener.address.is_unspecified()
                    || publication
                        .host_address
                        .is_none_or(|address| address == listener.address))
        }) else {
            continue;
        };
        let field = format!("{}.hostPort", publication.field);
        let place = context
            .referenced(publication.declared_by.kind, &publication.declared_by.name)
            .map(|resource| resource.origin.place(&field))
            .unwrap_or_else(|| format!("{}: {field}", publication.declared_by));
        refusals.push(format!(
            "{place}: {} is already taken on this host by a socket gitvisor did not open ({listener}); publishing it would take that socket's traffic: stop that listener or choose another hostPort",
            publication.host_side()
        ));
    }
    refusals
}

fn join(link: Change, drift: NetworkDrift, batch: Arc<NftBatch>) -> Change {
    let action = match link.action {
        Action::NoOp if !drift.is_empty() => Action::Update,
        other => other,
    };
    let mut fields = link.fields.clone();
    fields.extend(drift.fields());
    let mut reasons = link.reasons.clone();
    reasons.extend(drift.reasons());
    Change {
        id: link.id.clone(),
        action,
        fields,
        reasons,
        desired: link.desired.clone(),
        observed: None,
    }
    .with_observed(ManagedSnapshot {
        link: Some(link),
        network: drift,
        batch,
    })
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
