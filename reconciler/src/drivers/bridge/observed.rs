//! What planning saw on the host: the one dump indexed for lookups ([`HostLinks`]) and the
//! per-bridge snapshot a [`Change`](crate::plan::Change) carries to apply
//! ([`ObservedBridge`]).
//!
//! Apply works from this snapshot instead of dumping again, so applying many bridges costs
//! no extra dumps. Every request it derives is idempotent, so a snapshot that went stale
//! between plan and apply at worst fails one request; the next plan starts from the truth.
//!
//! Ownership evidence is read here too: where the marker lives ([`marker`]: the
//! `ifalias`) and whether the store records the bridge; the shared rules of
//! [`crate::contract::ownership`] decide from it.

use std::collections::{BTreeSet, HashMap};

use super::seam::LinkState;
use super::temporary::temporary_name;
use super::{GITVISOR_ALIAS_PREFIX, OWNERSHIP_MARKER};
use crate::contract::ownership::{self, Evidence, Marker};
use crate::model::{BridgePort, Kind, Name, ResourceId, Vlan};

/// A bridge (or the link that holds its name) as planning found it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedBridge {
    /// The link with the declared name; `None` when it does not exist yet.
    pub link: Option<LinkState>,
    /// Links enslaved to it now, by name.
    pub ports: Vec<PortLink>,
    /// Every declared port as found on the host, in declared order.
    pub declared_ports: Vec<DeclaredPort>,
    /// A half-made bridge under this bridge's temporary name, left by an interrupted
    /// creation and provably gitvisor's (see `HostLinks::leftover`): apply removes it first.
    pub leftover: Option<LinkState>,
    /// The `vlan` links on top of the bridge, whoever made them, sorted by name; `drift.rs`
    /// tells gitvisor's sub-interfaces (and their leftovers) from the others.
    pub vlan_links: Vec<LinkState>,
}

impl ObservedBridge {
    pub fn index(&self) -> Option<u32> {
        self.link.as_ref().map(|link| link.index)
    }
}

/// An interface enslaved to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLink {
    pub name: String,
    pub index: u32,
    /// Its `ifalias` starts with [`GITVISOR_ALIAS_PREFIX`]: a workload's link (a VM's tap,
    /// a container's veth) that another gitvisor driver enslaved. The bridge driver
    /// neither lists it among the bridge's ports nor releases it.
    pub workload: bool,
}

/// A port named in the manifest, looked up on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredPort {
    pub name: String,
    /// `None`: no interface with this name exists.
    pub index: Option<u32>,
    /// The name of the master it is enslaved to when that is not this bridge and not a
    /// bridge gitvisor manages: taking it would break something gitvisor does not own.
    pub foreign_master: Option<String>,
    /// The declared VLANs (sorted by id; empty: the kernel's default).
    pub vlans: Vec<Vlan>,
    /// Its VLANs on this bridge now; `None` when it is not this bridge's port yet.
    pub vlans_now: Option<Vec<Vlan>>,
    /// Whether it is administratively up (`IFF_UP`); `None` when it does not exist.
    pub up: Option<bool>,
}

/// What holds a bridge's temporary name on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// Nothing: the name is free.
    None,
    /// A bridge left by an interrupted creation of this very bridge: the store records
    /// the bridge, and the link carries the marker or no alias at all.
    Ours(LinkState),
    /// Something gitvisor cannot prove it made; it is left alone, and a create would
    /// fail on the taken name.
    Unproven(LinkState),
}

/// The dump, indexed by name, by index, by master and by the parent of `vlan` links
/// (each bridge's lookups are then constant time, not a scan of every link).
#[derive(Debug, Default)]
pub(crate) struct HostLinks {
    links: Vec<LinkState>,
    by_name: HashMap<String, usize>,
    by_index: HashMap<u32, usize>,
    ports_by_master: HashMap<u32, Vec<usize>>,
    vlans_by_parent: HashMap<u32, Vec<usize>>,
}

impl HostLinks {
    pub(crate) fn new(links: Vec<LinkState>) -> Self {
        let mut host = HostLinks::default();
        for (at, link) in links.iter().enumerate() {
            host.by_name.insert(link.name.clone(), at);
            host.by_index.insert(link.index, at);
            if let Some(master) = link.master {
                host.ports_by_master.entry(master).or_default().push(at);
            }
            if let Some(vlan) = link.vlan_of {
                host.vlans_by_parent
                    .entry(vlan.parent)
                    .or_default()
                    .push(at);
            }
        }
        host.links = links;
        host
    }

    pub(crate) fn links(&self) -> &[LinkState] {
        &self.links
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&LinkState> {
        self.by_name.get(name).map(|&at| &self.links[at])
    }

    fn by_index(&self, index: u32) -> Option<&LinkState> {
        self.by_index.get(&index).map(|&at| &self.links[at])
    }

    /// The links enslaved to `master`, sorted by name.
    pub(crate) fn ports_of(&self, master: u32) -> Vec<PortLink> {
        let mut ports: Vec<PortLink> = self
            .ports_by_master
            .get(&master)
            .into_iter()
            .flatten()
            .map(|&at| PortLink {
                name: self.links[at].name.clone(),
                index: self.links[at].index,
                workload: self.links[at]
                    .alias
                    .as_deref()
                    .is_some_and(|alias| alias.starts_with(GITVISOR_ALIAS_PREFIX)),
            })
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        ports
    }

    /// The snapshot of the bridge `id` with its declared `ports` looked up; `owned` is
    /// what the state store records. A provable leftover is included, an unproven one is
    /// not (see [`HostLinks::leftover`]).
    pub(crate) fn observe(
        &self,
        id: &ResourceId,
        declared_ports: &[BridgePort],
        owned: &BTreeSet<ResourceId>,
    ) -> ObservedBridge {
        let link = self.by_name(id.name.as_str()).cloned();
        let index = link.as_ref().map(|link| link.index);
        ObservedBridge {
            ports: index.map(|index| self.ports_of(index)).unwrap_or_default(),
            declared_ports: declared_ports
                .iter()
                .map(|port| self.declared_port(port, index, owned))
                .collect(),
            vlan_links: index.map(|index| self.vlans_on(index)).unwrap_or_default(),
            link,
            leftover: match self.leftover(id, owned) {
                Leftover::Ours(link) => Some(link),
                Leftover::None | Leftover::Unproven(_) => None,
            },
        }
    }

    /// What holds the temporary name of bridge `id`.
    pub(crate) fn leftover(&self, id: &ResourceId, owned: &BTreeSet<ResourceId>) -> Leftover {
        let Some(link) = self.by_name(&temporary_name(id)) else {
            return Leftover::None;
        };
        let evidence = Evidence::new(marker(link), owned.contains(id));
        if link.is_bridge() && evidence.leftover() == ownership::Leftover::Remove {
            Leftover::Ours(link.clone())
        } else {
            Leftover::Unproven(link.clone())
        }
    }

    /// The `vlan` links on top of `parent`, sorted by name.
    pub(crate) fn vlans_on(&self, parent: u32) -> Vec<LinkState> {
        let mut links: Vec<LinkState> = self
            .vlans_by_parent
            .get(&parent)
            .into_iter()
            .flatten()
            .map(|&at| self.links[at].clone())
            .collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        links
    }

    fn declared_port(
        &self,
        declared: &BridgePort,
        bridge: Option<u32>,
        owned: &BTreeSet<ResourceId>,
    ) -> DeclaredPort {
        let name = declared.as_str();
        let port = self.by_name(name);
        let foreign_master = port
            .and_then(|port| port.master)
            .filter(|&master| Some(master) != bridge)
            .and_then(|master| match self.by_index(master) {
                Some(master) if is_ours(master, owned) => None,
                Some(master) => Some(master.name.clone()),
                None => Some(format!("link #{master}")),
            });
        let mut vlans = declared.vlans.clone();
        vlans.sort();
        DeclaredPort {
            name: name.to_owned(),
            index: port.map(|port| port.index),
            foreign_master,
            vlans,
            vlans_now: port
                .filter(|port| port.master.is_some() && port.master == bridge)
                .map(|port| port.vlans.clone()),
            up: port.map(|port| port.up),
        }
    }
}

/// Where a bridge keeps gitvisor's marker: its `ifalias`, exactly [`OWNERSHIP_MARKER`].
pub(crate) fn marker(link: &LinkState) -> Marker {
    match link.alias.as_deref() {
        None => Marker::Absent,
        Some(OWNERSHIP_MARKER) => Marker::Ours,
        Some(other) => Marker::Foreign(other.to_owned()),
    }
}

/// The id a bridge named `name` would have; `None` for names no declaration can have.
pub(crate) fn bridge_id(name: &str) -> Option<ResourceId> {
    Name::parse(name)
        .ok()
        .map(|name| ResourceId::new(Kind::Bridge, name))
}

/// What the link and the store (`owned`) say about the bridge under `link`'s name.
pub(crate) fn evidence(link: &LinkState, owned: &BTreeSet<ResourceId>) -> Evidence {
    let recorded = bridge_id(&link.name).is_some_and(|id| owned.contains(&id));
    Evidence::new(marker(link), recorded)
}

/// Whether gitvisor may change or delete `link` without an adopt annotation: a bridge
/// that is gitvisor's by the shared rule (marker and store record).
pub(crate) fn is_ours(link: &LinkState, owned: &BTreeSet<ResourceId>) -> bool {
    link.is_bridge() && evidence(link, owned).is_ours()
}
