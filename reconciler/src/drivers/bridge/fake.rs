//! A recording, in-memory [`LinkSeam`] for tests.
//!
//! [`FakeLinks`] holds a list of [`LinkState`]s, records every [`LinkRequest`] it is sent
//! and applies it to that list the way the kernel would (including the idempotent answers
//! of the real seam, and its refusals: an IPv6 address that the link has with another
//! prefix length, a rename to a taken name or of a link that is up), so a test can assert
//! both the exact request sequence and that a second plan after apply converges. Bringing a link up gives it an IPv6 link-local
//! address, as the kernel does, so tests see the addresses the driver must ignore.
//! Bridge VLANs follow the kernel too: a new bridge and a newly enslaved port are on
//! VLAN 1 as pvid, untagged (the default `default_pvid`); a released port loses its
//! VLANs; one pvid per port; the bridge's own VLANs need `bridge_self`, a port's need
//! a bridge as master; a `vlan` link needs an existing parent.
//!
//! It is public (not `cfg(test)`) so integration tests of other modules can build a
//! [`BridgeDriver`](super::BridgeDriver) over it.

use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv6Net};
use nix::errno::Errno;

use super::seam::{
    BridgeOptions, DEFAULT_VLAN, LinkKind, LinkRequest, LinkSeam, LinkState, NetlinkError, VlanOf,
};
use crate::drivers::net::is_ipv6_link_local;
use crate::drivers::vlan_port;

type FailurePredicate = Box<dyn Fn(&LinkRequest) -> bool + Send + Sync>;

struct FakeHost {
    links: Vec<LinkState>,
    requests: Vec<LinkRequest>,
    dumps: usize,
    failures: Vec<(FailurePredicate, Errno)>,
}

/// A fake host: links in memory, every request recorded.
pub struct FakeLinks {
    host: Mutex<FakeHost>,
}

impl std::fmt::Debug for FakeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.lock();
        f.debug_struct("FakeLinks")
            .field("links", &host.links)
            .field("requests", &host.requests)
            .field("dumps", &host.dumps)
            .finish()
    }
}

impl FakeLinks {
    pub fn new(links: Vec<LinkState>) -> Self {
        FakeLinks {
            host: Mutex::new(FakeHost {
                links,
                requests: Vec::new(),
                dumps: 0,
                failures: Vec::new(),
            }),
        }
    }

    /// Every request sent so far, in order (failed ones included).
    pub fn requests(&self) -> Vec<LinkRequest> {
        self.lock().requests.clone()
    }

    /// Forget the recorded requests (the links stay as they are).
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// How many times [`LinkSeam::dump`] was called.
    pub fn dumps(&self) -> usize {
        self.lock().dumps
    }

    /// The links as they are now.
    pub fn links(&self) -> Vec<LinkState> {
        self.lock().links.clone()
    }

    pub fn link(&self, name: &str) -> Option<LinkState> {
        self.lock().links.iter().find(|l| l.name == name).cloned()
    }

    /// A link appears or is replaced by hand (not through the seam).
    pub fn put_link(&self, link: LinkState) {
        let mut host = self.lock();
        host.links.retain(|l| l.name != link.name);
        host.links.push(link);
    }

    /// Answer `errno` to every request matching `predicate` (recorded, not applied).
    pub fn fail_when(
        &self,
        predicate: impl Fn(&LinkRequest) -> bool + Send + Sync + 'static,
        errno: Errno,
    ) {
        self.lock().failures.push((Box::new(predicate), errno));
    }

    fn lock(&self) -> MutexGuard<'_, FakeHost> {
        // A test that panicked while holding the lock has already failed; keep going.
        self.host
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A bridge as the kernel creates it: down, MTU 1500, STP and VLAN filtering off.
pub fn bridge_link(index: u32, name: &str) -> LinkState {
    LinkState {
        index,
        name: name.to_owned(),
        alias: None,
        kind: Some(LinkKind::Bridge),
        mtu: 1500,
        up: false,
        master: None,
        bridge: Some(BridgeOptions::default()),
        addresses: Vec::new(),
        vlans: vec![DEFAULT_VLAN],
        vlan_of: None,
    }
}

/// Any other link: `kind` `None` for a physical device, else `dummy`, `veth`, ….
pub fn plain_link(index: u32, name: &str, kind: Option<&str>) -> LinkState {
    LinkState {
        index,
        name: name.to_owned(),
        alias: None,
        kind: kind.map(LinkKind::named),
        mtu: 1500,
        up: true,
        master: None,
        bridge: None,
        addresses: Vec::new(),
        vlans: Vec::new(),
        vlan_of: None,
    }
}

#[async_trait]
impl LinkSeam for FakeLinks {
    async fn dump(&self) -> Result<Vec<LinkState>, NetlinkError> {
        let mut host = self.lock();
        host.dumps += 1;
        Ok(host.links.clone())
    }

    async fn send(&self, request: LinkRequest) -> Result<Option<u32>, NetlinkError> {
        let mut host = self.lock();
        host.requests.push(request.clone());
        if let Some((_, errno)) = host.failures.iter().find(|(matches, _)| matches(&request)) {
            return Err(NetlinkError::from_errno(*errno as i32));
        }
        host.apply(request)
    }
}

impl FakeHost {
    fn apply(&mut self, request: LinkRequest) -> Result<Option<u32>, NetlinkError> {
        match request {
            LinkRequest::CreateBridge {
                name,
                stp,
                vlan_filtering,
            } => {
                if self.links.iter().any(|l| l.name == name) {
                    return Err(errno(Errno::EEXIST));
                }
                let index = self.links.iter().map(|l| l.index).max().unwrap_or(0) + 1;
                let mut link = bridge_link(index, &name);
                link.bridge = Some(BridgeOptions {
                    stp,
                    vlan_filtering,
                });
                self.links.push(link);
                return Ok(Some(index));
            }
            LinkRequest::SetAlias { index, alias } => {
                self.link_mut(index)?.alias = (!alias.is_empty()).then_some(alias);
            }
            LinkRequest::SetName { index, name } => {
                if self
                    .links
                    .iter()
                    .any(|l| l.name == name && l.index != index)
                {
                    return Err(errno(Errno::EEXIST));
                }
                let link = self.link_mut(index)?;
                if link.up {
                    return Err(errno(Errno::EBUSY));
                }
                link.name = name;
            }
            LinkRequest::SetMtu { index, mtu } => self.link_mut(index)?.mtu = mtu,
            LinkRequest::SetUp { index, up } => {
                let link = self.link_mut(index)?;
                link.up = up;
                let has_link_local = link.addresses.iter().any(is_ipv6_link_local);
                if up && !has_link_local {
                    let link_local = Ipv6Net::new(
                        std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, index as u16),
                        64,
                    )
                    .map_err(|e| NetlinkError::other(e.to_string()))?;
                    link.addresses.push(IpNet::V6(link_local));
                }
            }
            LinkRequest::SetBridgeOptions {
                index,
                stp,
                vlan_filtering,
            } => {
                let options = self
                    .link_mut(index)?
                    .bridge
                    .as_mut()
                    .ok_or_else(|| errno(Errno::EOPNOTSUPP))?;
                if let Some(stp) = stp {
                    options.stp = stp;
                }
                if let Some(vlan_filtering) = vlan_filtering {
                    options.vlan_filtering = vlan_filtering;
                }
            }
            LinkRequest::AddAddress { index, cidr } => {
                let link = self.link_mut(index)?;
                if link.addresses.contains(&cidr) {
                    return Ok(None);
                }
                // IPv4 keeps an address once per mask, IPv6 once whatever the prefix.
                let taken =
                    cidr.addr().is_ipv6() && link.addresses.iter().any(|a| a.addr() == cidr.addr());
                if taken {
                    return Err(errno(Errno::EEXIST));
                }
                link.addresses.push(cidr);
            }
            LinkRequest::DelAddress { index, cidr } => {
                self.link_mut(index)?.addresses.retain(|a| *a != cidr);
            }
            LinkRequest::SetMaster {
                port_index,
                master: Some(master),
            } => {
                let Some(bridge) = self.links.iter().find(|l| l.index == master) else {
                    return Err(errno(Errno::ENODEV));
                };
                let is_bridge = bridge.is_bridge();
                vlan_port::fake_enslave(self.link_mut(port_index)?, Some(master), is_bridge);
            }
            LinkRequest::SetMaster {
                port_index,
                master: None,
            } => {
                if let Ok(port) = self.link_mut(port_index) {
                    port.master = None;
                    port.vlans.clear();
                }
            }
            LinkRequest::DeleteLink { index } => {
                // VLAN links on top of a deleted link go with it, as in the kernel.
                self.links.retain(|l| {
                    l.index != index && l.vlan_of.is_none_or(|vlan| vlan.parent != index)
                });
                for port in &mut self.links {
                    if port.master == Some(index) {
                        port.master = None;
                        port.vlans.clear();
                    }
                }
            }
            LinkRequest::CreateVlanLink { name, parent, id } => {
                if self.links.iter().any(|l| l.name == name) {
                    return Err(errno(Errno::EEXIST));
                }
                if !self.links.iter().any(|l| l.index == parent) {
                    return Err(errno(Errno::ENODEV));
                }
                let taken = self
                    .links
                    .iter()
                    .any(|l| l.vlan_of == Some(VlanOf { id, parent }));
                if taken {
                    return Err(errno(Errno::EEXIST));
                }
                let index = self.links.iter().map(|l| l.index).max().unwrap_or(0) + 1;
                let mut link = plain_link(index, &name, Some("vlan"));
                link.up = false;
                link.vlan_of = Some(VlanOf { id, parent });
                self.links.push(link);
                return Ok(Some(index));
            }
            request @ (LinkRequest::AddBridgeVlan { .. } | LinkRequest::DelBridgeVlan { .. }) => {
                if let Some(result) = vlan_port::fake_apply(&mut self.links, &request) {
                    result?;
                }
            }
        }
        Ok(None)
    }

    fn link_mut(&mut self, index: u32) -> Result<&mut LinkState, NetlinkError> {
        self.links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| errno(Errno::ENODEV))
    }
}

fn errno(errno: Errno) -> NetlinkError {
    NetlinkError::from_errno(errno as i32)
}
