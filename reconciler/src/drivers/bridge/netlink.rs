//! The real [`LinkSeam`]: rtnetlink over one `NETLINK_ROUTE` socket for requests, and
//! a second socket whose link and address dumps are decoded in place (`drivers/rtnl`:
//! only the attributes this driver reads become values).
//!
//! One connection serves every request; its [`Handle`] is cheap to clone and requests from
//! concurrent `apply` tasks are multiplexed on the socket (the kernel serialises them under
//! the RTNL lock, but nothing waits on a process start or a round trip per task).
//!
//! A socket belongs to the network namespace of the thread that opened it (both are
//! opened in [`NetlinkLinks::connect`]), so tests
//! that `unshare` a namespace open the seam on that thread, after unsharing.
//!
//! Kernel behaviours this file works around:
//! - `RTM_NEWLINK` does not answer the new link's index, so [`LinkRequest::CreateBridge`]
//!   reads it back with a get-by-name.
//! - The kernel ignores `IFLA_IFALIAS` in a creating `RTM_NEWLINK`; the driver sets the
//!   marker with a separate [`LinkRequest::SetAlias`] right after creation.
//! - Bridge options live in `IFLA_INFO_DATA`, which only `RTM_NEWLINK` (not `RTM_SETLINK`)
//!   changes on an existing link, and only when `IFLA_INFO_KIND` names the bridge kind.
//! - A kernel built without `CONFIG_BRIDGE_VLAN_FILTERING` refuses `IFLA_BR_VLAN_FILTERING`
//!   even when it asks for "off", so a create only carries options that are on.
//! - Only one dump may run per socket at a time (`EBUSY` otherwise), so dumps are
//!   serialised with a lock; other requests are not.
//! - `EEXIST` to `RTM_NEWADDR` does not mean "already done": the kernel keeps one prefix
//!   length per IPv6 address, so adding `fd00::1/48` where `fd00::1/64` is answers
//!   `EEXIST` and leaves `/64`. The link's addresses are read back, and only an exact
//!   match counts as success.
//! - A link is renamed with `RTM_SETLINK` + `IFLA_IFNAME`, only while it is down.
//! - Bridge VLAN membership is not in the ordinary link dump: it is a second
//!   `RTM_GETLINK` dump with family `AF_BRIDGE` and `IFLA_EXT_MASK` =
//!   `RTEXT_FILTER_BRVLAN`, one message per port (and one per bridge, for its own VLANs),
//!   each VLAN in its own `IFLA_BRIDGE_VLAN_INFO`. A port may be listed twice (through its
//!   master and through itself); the entries are merged by VLAN id.
//! - A port's VLANs are changed with `RTM_SETLINK` / `RTM_DELLINK` of family `AF_BRIDGE`
//!   on the port; the bridge's own need `IFLA_BRIDGE_FLAGS` = `BRIDGE_FLAGS_SELF`, else
//!   the kernel looks for the bridge's master and answers `EOPNOTSUPP`. Adding a VLAN the
//!   port has sets its flags again (pvid and untagged both), so it is idempotent;
//!   deleting one it lacks answers `ENOENT`, which is the host as asked.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{BridgeStpState, InfoKind, LinkMessage};
use nix::errno::Errno;
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVlan,
};
use tokio::task::JoinHandle;

use super::seam::{LinkRequest, LinkSeam, LinkState, NetlinkError};
use crate::drivers::rtnl::{self, Dump, DumpSocket};
use crate::drivers::vlan_port;

/// The host's links, reached over rtnetlink.
#[derive(Debug)]
pub struct NetlinkLinks {
    handle: Handle,
    connection: JoinHandle<()>,
    /// The socket of the link and address dumps (rtnetlink's connection writes the
    /// requests and reads back one link's addresses).
    dumps: DumpSocket,
    dump_lock: tokio::sync::Mutex<()>,
}

impl NetlinkLinks {
    /// Open a route netlink socket in the calling thread's network namespace and drive it
    /// on the current Tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            NetlinkError::other("opening a netlink socket needs a running Tokio runtime")
        })?;
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|e| NetlinkError {
                errno: e.raw_os_error(),
                message: format!("cannot open a NETLINK_ROUTE socket: {e}"),
            })?;
        let connection = runtime.spawn(connection);
        let dumps = {
            let _in_runtime = runtime.enter();
            DumpSocket::open()?
        };
        Ok(NetlinkLinks {
            handle,
            connection,
            dumps,
            dump_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Every link, decoded in place (`rtnl.rs`), without the counters: nothing here
    /// reads them, and they are most of each link's message.
    async fn dump_links(&self) -> Result<Vec<LinkState>, NetlinkError> {
        let mut links = Vec::new();
        self.dumps
            .dump(Dump::Links, |body| links.extend(rtnl::link_of(body)))
            .await?;
        Ok(links)
    }

    async fn create_vlan_link(
        &self,
        name: &str,
        parent: u32,
        id: u16,
    ) -> Result<u32, NetlinkError> {
        let message = LinkVlan::new(name, parent, id).build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(netlink_error)?;
        self.index_of(name).await
    }

    /// The index of the link just created under `name`.
    async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        let created = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
            .map_err(|e| context("created, but reading back its index failed", e))?;
        created
            .map(|link| link.header.index)
            .ok_or_else(|| NetlinkError::other("created, but the kernel does not list it by name"))
    }

    async fn dump_addresses(&self) -> Result<Vec<(u32, IpNet)>, NetlinkError> {
        let mut addresses = Vec::new();
        self.dumps
            .dump(Dump::Addresses, |body| {
                addresses.extend(rtnl::address_of(body))
            })
            .await?;
        Ok(addresses)
    }

    async fn create_bridge(
        &self,
        name: &str,
        stp: bool,
        vlan_filtering: bool,
    ) -> Result<u32, NetlinkError> {
        // Options are sent only when they differ from the kernel's defaults (both off): a
        // kernel built without CONFIG_BRIDGE_VLAN_FILTERING refuses even
        // `vlan_filtering 0` with EOPNOTSUPP.
        let mut builder = LinkMessageBuilder::<LinkBridge>::new(name);
        if stp {
            builder = builder.stp_state(stp_state(stp));
        }
        if vlan_filtering {
            builder = builder.vlan_filtering(vlan_filtering);
        }
        let message = builder.build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(netlink_error)?;
        self.index_of(name).await
    }

    async fn set_link(&self, message: LinkMessage) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(netlink_error)
    }

    async fn set_bridge_options(
        &self,
        index: u32,
        stp: Option<bool>,
        vlan_filtering: Option<bool>,
    ) -> Result<(), NetlinkError> {
        let mut builder =
            LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge).index(index);
        if let Some(stp) = stp {
            builder = builder.stp_state(stp_state(stp));
        }
        if let Some(vlan_filtering) = vlan_filtering {
            builder = builder.vlan_filtering(vlan_filtering);
        }
        self.handle
            .link()
            .change(builder.build())
            .execute()
            .await
            .map_err(netlink_error)
    }

    async fn add_address(&self, index: u32, cidr: IpNet) -> Result<(), NetlinkError> {
        let added = self
            .handle
            .address()
            .add(index, cidr.addr(), cidr.prefix_len())
            .execute()
            .await
            .map_err(netlink_error);
        match added {
            Err(error) if error.is_errno(Errno::EEXIST) => {
                self.confirm_address(index, cidr, error).await
            }
            other => other,
        }
    }

    /// After `EEXIST`: success only when the link has exactly `cidr`, not the same address
    /// with another prefix length.
    async fn confirm_address(
        &self,
        index: u32,
        cidr: IpNet,
        exists: NetlinkError,
    ) -> Result<(), NetlinkError> {
        let present = self.addresses_of(index).await?;
        if present.contains(&cidr) {
            return Ok(());
        }
        let same_address: Vec<String> = present
            .iter()
            .filter(|other| other.addr() == cidr.addr())
            .map(IpNet::to_string)
            .collect();
        let message = if same_address.is_empty() {
            format!(
                "{}: the kernel answered that {cidr} exists, but link #{index} does not have it",
                exists.message
            )
        } else {
            format!(
                "{} is already on link #{index} as {}, and the kernel keeps one prefix length per address; declare it once",
                cidr.addr(),
                same_address.join(", ")
            )
        };
        Err(NetlinkError {
            errno: exists.errno,
            message,
        })
    }

    /// The addresses of one link (one filtered address dump).
    async fn addresses_of(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let _one_dump_at_a_time = self.dump_lock.lock().await;
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| context("read back the link's addresses", e))?;
        Ok(messages
            .iter()
            .filter_map(address_of)
            .filter(|(link, _)| *link == index)
            .map(|(_, cidr)| cidr)
            .collect())
    }

    async fn del_address(&self, index: u32, cidr: IpNet) -> Result<(), NetlinkError> {
        let message = match cidr.addr() {
            IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(ip, cidr.prefix_len())
                .build(),
            IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(ip, cidr.prefix_len())
                .build(),
        };
        let deleted = self
            .handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(netlink_error);
        tolerate(deleted, &[Errno::ENOENT, Errno::EADDRNOTAVAIL])
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let deleted = self
            .handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(netlink_error);
        tolerate(deleted, &[Errno::ENODEV])
    }
}

impl Drop for NetlinkLinks {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

#[async_trait]
impl LinkSeam for NetlinkLinks {
    async fn dump(&self) -> Result<Vec<LinkState>, NetlinkError> {
        let _one_dump_at_a_time = self.dump_lock.lock().await;
        let mut links = self.dump_links().await?;
        let position: HashMap<u32, usize> = links
            .iter()
            .enumerate()
            .map(|(position, link)| (link.index, position))
            .collect();
        for (index, cidr) in self.dump_addresses().await? {
            if let Some(&at) = position.get(&index) {
                links[at].addresses.push(cidr);
            }
        }
        for port in vlan_port::dump(&self.handle).await? {
            if let Some(&at) = position.get(&port.index) {
                links[at].vlans = port.vlans;
            }
        }
        Ok(links)
    }

    async fn send(&self, request: LinkRequest) -> Result<Option<u32>, NetlinkError> {
        match request {
            LinkRequest::CreateBridge {
                name,
                stp,
                vlan_filtering,
            } => {
                return self
                    .create_bridge(&name, stp, vlan_filtering)
                    .await
                    .map(Some);
            }
            LinkRequest::SetAlias { index, alias } => {
                self.set_link(LinkUnspec::new_with_index(index).alias(alias).build())
                    .await?
            }
            LinkRequest::SetName { index, name } => {
                self.set_link(LinkUnspec::new_with_index(index).name(name).build())
                    .await?
            }
            LinkRequest::SetMtu { index, mtu } => {
                self.set_link(LinkUnspec::new_with_index(index).mtu(mtu).build())
                    .await?
            }
            LinkRequest::SetUp { index, up } => {
                let builder = LinkUnspec::new_with_index(index);
                let builder = if up { builder.up() } else { builder.down() };
                self.set_link(builder.build()).await?
            }
            LinkRequest::SetBridgeOptions {
                index,
                stp,
                vlan_filtering,
            } => self.set_bridge_options(index, stp, vlan_filtering).await?,
            LinkRequest::AddAddress { index, cidr } => self.add_address(index, cidr).await?,
            LinkRequest::DelAddress { index, cidr } => self.del_address(index, cidr).await?,
            LinkRequest::SetMaster {
                port_index,
                master: Some(master),
            } => {
                self.set_link(
                    LinkUnspec::new_with_index(port_index)
                        .controller(master)
                        .build(),
                )
                .await?
            }
            LinkRequest::SetMaster {
                port_index,
                master: None,
            } => {
                let released = self
                    .set_link(
                        LinkUnspec::new_with_index(port_index)
                            .nocontroller()
                            .build(),
                    )
                    .await;
                tolerate(released, &[Errno::ENODEV])?
            }
            LinkRequest::DeleteLink { index } => self.delete_link(index).await?,
            LinkRequest::CreateVlanLink { name, parent, id } => {
                return self.create_vlan_link(&name, parent, id).await.map(Some);
            }
            LinkRequest::AddBridgeVlan {
                index,
                vlan,
                bridge_self,
            } => vlan_port::add(&self.handle, index, vlan, bridge_self).await?,
            LinkRequest::DelBridgeVlan {
                index,
                id,
                bridge_self,
            } => vlan_port::del(&self.handle, index, id, bridge_self).await?,
        }
        Ok(None)
    }
}

fn stp_state(stp: bool) -> BridgeStpState {
    if stp {
        BridgeStpState::KernelStp
    } else {
        BridgeStpState::Disabled
    }
}

/// Treat the listed errnos as success. Only for answers that prove the host is as asked,
/// whatever else is on it: an address or link that is gone after a delete (`ENOENT`,
/// `EADDRNOTAVAIL`, `ENODEV`: the kernel matched the exact address and prefix length, or
/// the index, and found nothing), a port that is gone when it was to be released. Never
/// for `EEXIST`, which can name something other than what was asked (see
/// `confirm_address`).
pub(crate) fn tolerate(
    result: Result<(), NetlinkError>,
    already_done: &[Errno],
) -> Result<(), NetlinkError> {
    match result {
        Err(error) if already_done.iter().any(|errno| error.is_errno(*errno)) => Ok(()),
        other => other,
    }
}

pub(crate) fn netlink_error(error: rtnetlink::Error) -> NetlinkError {
    match &error {
        rtnetlink::Error::NetlinkError(message) => match message.code {
            Some(code) => NetlinkError::from_errno(code.get().abs()),
            None => NetlinkError::other(error.to_string()),
        },
        _ => NetlinkError::other(error.to_string()),
    }
}

pub(crate) fn context(what: &str, error: rtnetlink::Error) -> NetlinkError {
    let error = netlink_error(error);
    NetlinkError {
        message: format!("{what}: {}", error.message),
        ..error
    }
}

/// The interface address of one `RTM_NEWADDR`: `IFA_LOCAL` when present (it differs from
/// `IFA_ADDRESS` only on point-to-point links), else `IFA_ADDRESS`.
fn address_of(message: &AddressMessage) -> Option<(u32, IpNet)> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let cidr = IpNet::new(ip, message.header.prefix_len).ok()?;
    Some((message.header.index, cidr))
}
