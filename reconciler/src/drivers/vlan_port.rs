//! The 802.1Q VLANs of one bridge port, shared by every driver that enslaves a link to a
//! bridge: the Bridge driver's declared ports (and the bridge itself), the VM driver's
//! taps, the container driver's host veth ends.
//!
//! One rule for all of them: on a bridge with `vlanFiltering: true` a port carries
//! exactly its declared VLANs, or the kernel's default ([`DEFAULT_VLAN`]: VLAN 1, the
//! port VLAN id, leaving untagged) when it declares none; a port about to be enslaved
//! is taken to have that default, which the kernel gives every new port. On a bridge
//! without filtering VLANs are not looked at.
//!
//! The pieces, in the order a driver uses them:
//! 1. [`dump`]: one `AF_BRIDGE` link dump of the whole host (with
//!    `RTEXT_FILTER_BRVLAN`), every port's VLANs by index and name;
//! 2. [`VlanDrift::between`] the VLANs a port has and [`declared_or_default`];
//! 3. [`VlanDrift::requests`]: the ids to take off first, then the VLANs to put on (a
//!    `pvid` moves with the VLAN that declares it), as [`LinkRequest`]s;
//! 4. [`add`] / [`del`] send one of them over rtnetlink, and [`fake_apply`] carries it
//!    out on the drivers' fakes the way the kernel does.
//!
//! Kernel behaviours: a port listed twice in the dump (through its master and through
//! itself) is merged by VLAN id; adding a VLAN the port has sets its flags again, so it
//! is idempotent; deleting one it lacks answers `ENOENT`, which is the host as asked; the
//! bridge's own VLANs need `BRIDGE_FLAGS_SELF`, else the kernel looks for the bridge's
//! master and answers `EOPNOTSUPP`.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfoFlags, LinkAttribute, LinkExtentMask, LinkMessage,
};
use nix::errno::Errno;
use rtnetlink::{Handle, LinkBridgeVlan, LinkMessageBuilder};

use crate::drivers::bridge::netlink::{context, netlink_error, tolerate};
use crate::drivers::bridge::{LinkRequest, LinkState, NetlinkError};
use crate::model::Vlan;

/// The VLAN the kernel puts a new bridge and every new port on: `default_pvid` 1, as
/// the port VLAN id, leaving untagged.
pub const DEFAULT_VLAN: Vlan = Vlan {
    id: 1,
    pvid: true,
    untagged: true,
};

/// What a port declaring `vlans` carries, sorted by id: those, or [`DEFAULT_VLAN`].
pub fn declared_or_default(vlans: &[Vlan]) -> Vec<Vlan> {
    if vlans.is_empty() {
        return vec![DEFAULT_VLAN];
    }
    let mut vlans = vlans.to_vec();
    vlans.sort();
    vlans
}

/// How a set of VLANs (a port's, or the bridge's own) differs from the declared one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanDrift {
    /// Now and declared, sorted by id.
    pub old: Vec<Vlan>,
    pub new: Vec<Vlan>,
    /// Ids to take off, then VLANs to put on (or whose flags change).
    pub remove: Vec<u16>,
    pub set: Vec<Vlan>,
}

impl VlanDrift {
    /// The difference between `old` and `new` (both sorted by id), `None` when equal.
    pub fn between(old: Vec<Vlan>, new: Vec<Vlan>) -> Option<Self> {
        if old == new {
            return None;
        }
        Some(VlanDrift {
            remove: old
                .iter()
                .filter(|vlan| !new.iter().any(|n| n.id == vlan.id))
                .map(|vlan| vlan.id)
                .collect(),
            set: new
                .iter()
                .filter(|vlan| !old.contains(vlan))
                .copied()
                .collect(),
            old,
            new,
        })
    }

    /// A port about to be enslaved (it gets the kernel's default) against `declared`.
    pub fn after_enslave(declared: &[Vlan]) -> Option<Self> {
        Self::between(vec![DEFAULT_VLAN], declared_or_default(declared))
    }

    /// Sends the requests that close the drift on link `index` over `handle`, in order.
    pub async fn send(
        &self,
        handle: &Handle,
        index: u32,
        bridge_self: bool,
    ) -> Result<(), NetlinkError> {
        for &id in &self.remove {
            del(handle, index, id, bridge_self).await?;
        }
        for &vlan in &self.set {
            add(handle, index, vlan, bridge_self).await?;
        }
        Ok(())
    }

    /// Closes the drift on a fake host's list of VLANs, as the kernel would.
    pub fn fake_apply_to(&self, vlans: &mut Vec<Vlan>) {
        vlans.retain(|vlan| !self.remove.contains(&vlan.id));
        for &vlan in &self.set {
            put(vlans, vlan);
        }
    }

    /// The requests that close the drift on link `index`, removals first (`bridge_self`:
    /// `index` is the bridge itself).
    pub fn requests(&self, index: u32, bridge_self: bool) -> Vec<LinkRequest> {
        let remove = self.remove.iter().map(|&id| LinkRequest::DelBridgeVlan {
            index,
            id,
            bridge_self,
        });
        let set = self.set.iter().map(|&vlan| LinkRequest::AddBridgeVlan {
            index,
            vlan,
            bridge_self,
        });
        remove.chain(set).collect()
    }
}

/// VLANs as a JSON list of strings, `["1 pvid untagged", "10"]`, as plans show them.
pub fn vlan_list(vlans: &[Vlan]) -> serde_json::Value {
    vlans.iter().map(|vlan| vlan.to_string()).collect()
}

/// One link's VLANs as the `AF_BRIDGE` dump lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortVlans {
    pub index: u32,
    pub name: String,
    /// Sorted by id.
    pub vlans: Vec<Vlan>,
}

/// Every bridge port's (and bridge's) VLANs on the host: one `AF_BRIDGE` dump. Only one
/// dump may run per socket at a time; callers sharing a handle serialise them.
pub async fn dump(handle: &Handle) -> Result<Vec<PortVlans>, NetlinkError> {
    let messages: Vec<LinkMessage> = handle
        .link()
        .get()
        .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
        .execute()
        .try_collect()
        .await
        .map_err(|e| context("dump bridge VLANs", e))?;
    let mut by_index: HashMap<u32, (String, BTreeMap<u16, Vlan>)> = HashMap::new();
    for message in messages {
        let entry = by_index.entry(message.header.index).or_default();
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => entry.0 = name,
                LinkAttribute::AfSpecBridge(specs) => {
                    for spec in specs {
                        if let AfSpecBridge::VlanInfo(info) = spec {
                            entry.1.insert(
                                info.vid,
                                Vlan {
                                    id: info.vid,
                                    pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                                    untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                                },
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(by_index
        .into_iter()
        .map(|(index, (name, vlans))| PortVlans {
            index,
            name,
            vlans: vlans.into_values().collect(),
        })
        .collect())
}

fn builder(index: u32, bridge_self: bool) -> LinkMessageBuilder<LinkBridgeVlan> {
    let builder = LinkBridgeVlan::new(index);
    if bridge_self {
        builder.bridge_self()
    } else {
        builder
    }
}

/// Put link `index` on `vlan` (or set its flags there).
pub async fn add(
    handle: &Handle,
    index: u32,
    vlan: Vlan,
    bridge_self: bool,
) -> Result<(), NetlinkError> {
    let mut flags = BridgeVlanInfoFlags::empty();
    if vlan.pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if vlan.untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    handle
        .link()
        .set(builder(index, bridge_self).vlan(vlan.id, flags).build())
        .execute()
        .await
        .map_err(netlink_error)
}

/// Take link `index` off VLAN `id`; a VLAN it is not on is done.
pub async fn del(
    handle: &Handle,
    index: u32,
    id: u16,
    bridge_self: bool,
) -> Result<(), NetlinkError> {
    let deleted = handle
        .link()
        .del_with_message(
            builder(index, bridge_self)
                .vlan(id, BridgeVlanInfoFlags::empty())
                .build(),
        )
        .execute()
        .await
        .map_err(netlink_error);
    tolerate(deleted, &[Errno::ENOENT])
}

/// Carries out a VLAN request on a fake host's links as the kernel would: refuses the
/// bridge's own VLANs without `bridge_self` and a port's on a link that is no bridge's
/// port (`EOPNOTSUPP`), moves the pvid, keeps the list sorted. `None` for any other
/// request.
pub fn fake_apply(
    links: &mut [LinkState],
    request: &LinkRequest,
) -> Option<Result<(), NetlinkError>> {
    let (index, bridge_self) = match request {
        LinkRequest::AddBridgeVlan {
            index, bridge_self, ..
        }
        | LinkRequest::DelBridgeVlan {
            index, bridge_self, ..
        } => (*index, *bridge_self),
        _ => return None,
    };
    let errno = |errno: Errno| Some(Err(NetlinkError::from_errno(errno as i32)));
    let Some(link) = links.iter().find(|l| l.index == index) else {
        return errno(Errno::ENODEV);
    };
    let fits = if bridge_self {
        link.is_bridge()
    } else {
        link.master
            .is_some_and(|master| links.iter().any(|l| l.index == master && l.is_bridge()))
    };
    if !fits {
        return errno(Errno::EOPNOTSUPP);
    }
    let Some(link) = links.iter_mut().find(|l| l.index == index) else {
        return errno(Errno::ENODEV);
    };
    match *request {
        LinkRequest::AddBridgeVlan { vlan, .. } => put(&mut link.vlans, vlan),
        LinkRequest::DelBridgeVlan { id, .. } => link.vlans.retain(|v| v.id != id),
        _ => return None,
    }
    Some(Ok(()))
}

/// Puts `vlan` in a fake port's sorted list: a pvid moves to it, its flags replace the
/// VLAN's old ones.
fn put(vlans: &mut Vec<Vlan>, vlan: Vlan) {
    if vlan.pvid {
        for other in vlans.iter_mut() {
            other.pvid = false;
        }
    }
    vlans.retain(|v| v.id != vlan.id);
    vlans.push(vlan);
    vlans.sort();
}

/// What enslaving a port does to its VLANs on a fake host, as the kernel does: a port
/// that joins a bridge gets [`DEFAULT_VLAN`], one that leaves loses them all.
pub fn fake_enslave(port: &mut LinkState, master: Option<u32>, master_is_bridge: bool) {
    if port.master != master {
        port.vlans = if master.is_some() && master_is_bridge {
            vec![DEFAULT_VLAN]
        } else {
            Vec::new()
        };
    }
    port.master = master;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vlan(id: u16, pvid: bool, untagged: bool) -> Vlan {
        Vlan { id, pvid, untagged }
    }

    #[test]
    fn nothing_declared_is_the_kernel_default_and_lists_sort() {
        assert_eq!(declared_or_default(&[]), vec![DEFAULT_VLAN]);
        assert_eq!(
            declared_or_default(&[vlan(20, false, false), vlan(10, true, true)]),
            vec![vlan(10, true, true), vlan(20, false, false)]
        );
        assert_eq!(VlanDrift::after_enslave(&[]), None);
    }

    #[test]
    fn requests_take_off_first_then_set_what_differs() {
        let drift = VlanDrift::between(
            vec![DEFAULT_VLAN, vlan(20, false, false)],
            vec![vlan(10, true, true), vlan(20, false, false)],
        )
        .unwrap();
        assert_eq!(
            drift.requests(7, false),
            vec![
                LinkRequest::DelBridgeVlan {
                    index: 7,
                    id: 1,
                    bridge_self: false
                },
                LinkRequest::AddBridgeVlan {
                    index: 7,
                    vlan: vlan(10, true, true),
                    bridge_self: false
                },
            ]
        );
        // Only the flags differ: the VLAN is set again, nothing taken off.
        let flags =
            VlanDrift::between(vec![vlan(10, false, false)], vec![vlan(10, true, false)]).unwrap();
        assert!(flags.remove.is_empty());
        assert_eq!(flags.set, vec![vlan(10, true, false)]);
    }
}
