//! Link and address messages of `NETLINK_ROUTE` read in place: the dumps the bridge and
//! network drivers observe with, and the broadcasts the bridge watch listens to.
//!
//! # Why not rtnetlink's types
//!
//! rtnetlink decodes every attribute of every message into owned values (strings,
//! vectors, one enum per attribute, nested ones for every address family's devconf),
//! and its connection queues each decoded message in a channel. The drivers need seven
//! attributes of a link (name, alias, MTU, master, parent, kind and two bridge options,
//! a VLAN id) and two of an address, so with 10 000 links decoding was about a fifth of
//! a no-op plan, and the watch's connection held every message broadcast during an
//! apply at once (about 25 MB). Here a dump is a request written by hand and the answer
//! read one datagram at a time: each message is walked in place and only what names a
//! link, an address or a switch becomes a value; the datagram is dropped before the
//! next is read.
//!
//! The same walk reads a link's IPv4 devconf (`IFLA_AF_SPEC` → `AF_INET` →
//! `IFLA_INET_CONF`, one `u32` per `IPV4_DEVCONF_*` setting): the array the kernel
//! prints one file at a time under `/proc/sys/net/ipv4/conf/<link>/`, so the network
//! driver reads the `forwarding` and `route_localnet` switches of every interface in
//! the link dump instead of two file reads per interface.
//!
//! Writing requests (create, set, delete) stays with rtnetlink: those are a handful of
//! messages, and its builders carry the kernel's quirks (`bridge/netlink.rs`).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rtnetlink::sys::constants::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use crate::drivers::bridge::seam::VlanOf;
use crate::drivers::bridge::{BridgeOptions, LinkKind, LinkState, NetlinkError};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
pub const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IFF_UP: u32 = 1;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_STP_STATE: u16 = 5;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_VLAN_ID: u16 = 1;
const AF_INET: u16 = 2;
const IFLA_INET_CONF: u16 = 1;
/// `IPV4_DEVCONF_FORWARDING` and `IPV4_DEVCONF_ROUTE_LOCALNET`: the array holds setting
/// `n` at position `n - 1`.
const IPV4_DEVCONF_FORWARDING: usize = 1;
const IPV4_DEVCONF_ROUTE_LOCALNET: usize = 26;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `RTEXT_FILTER_SKIP_STATS`: the counters, most of each link's message, left out.
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

/// How long the kernel gets to answer a whole dump.
const DUMP_DEADLINE: Duration = Duration::from_secs(30);

/// One netlink message of a buffer: its type, sequence number and body (after the
/// 16-byte header).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    pub sequence: u32,
    pub body: &'a [u8],
}

/// The messages of one datagram, in place. A truncated message ends the walk.
pub fn messages(buffer: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buffer.get(at..at + 16)?;
        let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let message = buffer.get(at..at + length).filter(|_| length >= 16)?;
        at += length.next_multiple_of(4);
        Some(Message {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            sequence: u32::from_ne_bytes([header[8], header[9], header[10], header[11]]),
            body: &message[16..],
        })
    })
}

/// The attributes of `body`, in place: type (nested and byte-order bits cleared) and
/// value. A truncated attribute ends the walk.
pub fn attributes(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = body.get(at..at + 4)?;
        let length = u16::from_ne_bytes([header[0], header[1]]) as usize;
        let value = body.get(at + 4..at + length).filter(|_| length >= 4)?;
        at += length.next_multiple_of(4);
        Some((u16::from_ne_bytes([header[2], header[3]]) & 0x3fff, value))
    })
}

fn u32_of(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

fn string_of(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// The `ifinfomsg` index of a link message's body.
pub fn link_index(body: &[u8]) -> Option<u32> {
    u32_of(body.get(4..8)?)
}

/// A link message's body (`ifinfomsg` and attributes) as the bridge driver sees the
/// link; `None` when it is too short to be one.
pub fn link_of(body: &[u8]) -> Option<LinkState> {
    let index = link_index(body)?;
    let flags = u32_of(body.get(8..12)?)?;
    let mut link = LinkState {
        index,
        name: String::new(),
        alias: None,
        kind: None,
        mtu: 0,
        up: flags & IFF_UP != 0,
        master: None,
        bridge: None,
        addresses: Vec::new(),
        vlans: Vec::new(),
        vlan_of: None,
    };
    let mut parent = None;
    for (kind, value) in attributes(body.get(16..)?) {
        match kind {
            IFLA_IFNAME => link.name = string_of(value),
            IFLA_IFALIAS => link.alias = Some(string_of(value)),
            IFLA_MTU => link.mtu = u32_of(value).unwrap_or(0),
            IFLA_MASTER => link.master = u32_of(value).filter(|master| *master != 0),
            IFLA_LINK => parent = u32_of(value),
            IFLA_LINKINFO => read_link_info(&mut link, value),
            _ => {}
        }
    }
    if let (Some(vlan_of), Some(parent)) = (&mut link.vlan_of, parent) {
        vlan_of.parent = parent;
    }
    Some(link)
}

/// `IFLA_LINKINFO`: the kind, then the kind's options (the data is read after the
/// whole nest, as its meaning depends on the kind).
fn read_link_info(link: &mut LinkState, info: &[u8]) {
    let mut data = None;
    for (kind, value) in attributes(info) {
        match kind {
            IFLA_INFO_KIND => link.kind = Some(LinkKind::named(&string_of(value))),
            IFLA_INFO_DATA => data = Some(value),
            _ => {}
        }
    }
    match (&link.kind, data) {
        (Some(LinkKind::Bridge), data) => {
            let mut options = BridgeOptions::default();
            for (kind, value) in attributes(data.unwrap_or_default()) {
                match kind {
                    IFLA_BR_STP_STATE => options.stp = u32_of(value).is_some_and(|s| s != 0),
                    IFLA_BR_VLAN_FILTERING => {
                        options.vlan_filtering = value.first().is_some_and(|on| *on != 0)
                    }
                    _ => {}
                }
            }
            link.bridge = Some(options);
        }
        (Some(LinkKind::Other(name)), Some(data)) if name == "vlan" => {
            for (kind, value) in attributes(data) {
                if kind == IFLA_VLAN_ID
                    && let Some(id) = value.get(..2)
                {
                    link.vlan_of = Some(VlanOf {
                        id: u16::from_ne_bytes([id[0], id[1]]),
                        parent: 0,
                    });
                }
            }
        }
        _ => {}
    }
}

/// A link's IPv4 switches, from its devconf in the link message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Switches {
    pub forwarding: bool,
    pub route_localnet: bool,
}

/// The name and IPv4 switches of a link message's link; `None` when the link has no
/// IPv4 configuration (no `/proc/sys/net/ipv4/conf/<link>` either).
pub fn ipv4_switches_of(body: &[u8]) -> Option<(String, Ipv4Switches)> {
    let mut name = None;
    let mut switches = None;
    for (kind, value) in attributes(body.get(16..)?) {
        match kind {
            IFLA_IFNAME => name = Some(string_of(value)),
            IFLA_AF_SPEC => {
                let inet = attributes(value).find(|(family, _)| *family == AF_INET);
                let conf = inet.and_then(|(_, inet)| {
                    attributes(inet).find(|(kind, _)| *kind == IFLA_INET_CONF)
                });
                switches = conf.and_then(|(_, conf)| {
                    let setting = |n: usize| u32_of(conf.get((n - 1) * 4..n * 4)?);
                    Some(Ipv4Switches {
                        forwarding: setting(IPV4_DEVCONF_FORWARDING)? == 1,
                        route_localnet: setting(IPV4_DEVCONF_ROUTE_LOCALNET)? == 1,
                    })
                });
            }
            _ => {}
        }
    }
    name.zip(switches)
}

/// The interface address of an address message's body (`ifaddrmsg` and attributes):
/// `IFA_LOCAL` when present (it differs from `IFA_ADDRESS` only on point-to-point
/// links), else `IFA_ADDRESS`; with the link's index.
pub fn address_of(body: &[u8]) -> Option<(u32, IpNet)> {
    let prefix = *body.get(1)?;
    let index = u32_of(body.get(4..8)?)?;
    let (mut local, mut address) = (None, None);
    for (kind, value) in attributes(body.get(8..)?) {
        match kind {
            IFA_LOCAL => local = ip_of(value),
            IFA_ADDRESS => address = ip_of(value),
            _ => {}
        }
    }
    let cidr = IpNet::new(local.or(address)?, prefix).ok()?;
    Some((index, cidr))
}

/// The `ifaddrmsg` index of an address message's body.
pub fn address_index(body: &[u8]) -> Option<u32> {
    u32_of(body.get(4..8)?)
}

fn ip_of(value: &[u8]) -> Option<IpAddr> {
    match value.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    }
}

/// What to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    /// Every link, without statistics.
    Links,
    /// Every address of every family.
    Addresses,
}

impl Dump {
    fn request(self, sequence: u32) -> Vec<u8> {
        let (kind, body) = match self {
            Dump::Links => {
                // ifinfomsg (all zero: every family, every link), then IFLA_EXT_MASK.
                let mut body = vec![0u8; 16];
                body.extend(8u16.to_ne_bytes());
                body.extend(IFLA_EXT_MASK.to_ne_bytes());
                body.extend(RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
                (RTM_GETLINK, body)
            }
            // ifaddrmsg, all zero: every family, every link.
            Dump::Addresses => (RTM_GETADDR, vec![0u8; 8]),
        };
        let mut buffer = Vec::with_capacity(16 + body.len());
        buffer.extend(((16 + body.len()) as u32).to_ne_bytes());
        buffer.extend(kind.to_ne_bytes());
        buffer.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        buffer.extend(sequence.to_ne_bytes());
        buffer.extend(0u32.to_ne_bytes());
        buffer.extend(body);
        buffer
    }

    fn answer(self) -> u16 {
        match self {
            Dump::Links => RTM_NEWLINK,
            Dump::Addresses => RTM_NEWADDR,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Dump::Links => "dump links",
            Dump::Addresses => "dump addresses",
        }
    }
}

/// A `NETLINK_ROUTE` socket for dumps, opened in the calling thread's network namespace
/// (which it keeps). One dump at a time (the kernel answers `EBUSY` to a second): the
/// caller serialises them.
pub struct DumpSocket {
    socket: TokioSocket,
    sequence: AtomicU32,
    /// A dump was started and not read to its end (its future was dropped): the kernel
    /// holds the rest for this socket, and it is read away before the next request.
    unfinished: AtomicBool,
}

impl std::fmt::Debug for DumpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpSocket")
            .field("sequence", &self.sequence)
            .field("unfinished", &self.unfinished)
            .finish_non_exhaustive()
    }
}

impl DumpSocket {
    pub fn open() -> Result<Self, NetlinkError> {
        let opened = TokioSocket::new(NETLINK_ROUTE).and_then(|mut socket| {
            socket.socket_mut().bind(&SocketAddr::new(0, 0))?;
            Ok(socket)
        });
        let socket = opened.map_err(|cause| NetlinkError {
            errno: cause.raw_os_error(),
            message: format!("cannot open a NETLINK_ROUTE socket: {cause}"),
        })?;
        Ok(DumpSocket {
            socket,
            sequence: AtomicU32::new(1),
            unfinished: AtomicBool::new(false),
        })
    }

    /// Runs `dump`, handing each answering message's body to `each` as its datagram
    /// arrives, within [`DUMP_DEADLINE`].
    pub async fn dump(
        &self,
        dump: Dump,
        mut each: impl FnMut(&[u8]) + Send,
    ) -> Result<(), NetlinkError> {
        let work = async {
            if self.unfinished.load(Ordering::Relaxed) {
                self.read_until_done(dump, None, &mut |_| {}).await?;
            }
            let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
            self.socket
                .send(&dump.request(sequence))
                .await
                .map_err(|cause| io_error(dump, cause))?;
            self.unfinished.store(true, Ordering::Relaxed);
            let done = self.read_until_done(dump, Some(sequence), &mut each).await;
            self.unfinished.store(false, Ordering::Relaxed);
            done
        };
        tokio::time::timeout(DUMP_DEADLINE, work)
            .await
            .unwrap_or_else(|_| {
                Err(NetlinkError::other(format!(
                    "{}: the kernel did not finish within {DUMP_DEADLINE:?}",
                    dump.what()
                )))
            })
    }

    /// Reads datagrams until the end of the dump `sequence` (of any dump when `None`),
    /// handing `each` the answers that belong to it.
    async fn read_until_done(
        &self,
        dump: Dump,
        sequence: Option<u32>,
        each: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), NetlinkError> {
        loop {
            let (buffer, _) = self
                .socket
                .recv_from_full()
                .await
                .map_err(|cause| io_error(dump, cause))?;
            for message in messages(&buffer) {
                if sequence.is_some_and(|ours| message.sequence != ours) {
                    continue;
                }
                match message.kind {
                    // Both end a dump; both carry an errno (0 for a complete dump).
                    NLMSG_DONE | NLMSG_ERROR => {
                        let errno = message.body.get(..4).and_then(u32_of).unwrap_or(0);
                        let errno = (errno as i32).saturating_abs();
                        if sequence.is_none() || errno == 0 {
                            return Ok(());
                        }
                        let error = NetlinkError::from_errno(errno);
                        return Err(NetlinkError {
                            message: format!("{}: {}", dump.what(), error.message),
                            ..error
                        });
                    }
                    kind if kind == dump.answer() && sequence.is_some() => each(message.body),
                    _ => {}
                }
            }
        }
    }
}

fn io_error(dump: Dump, cause: std::io::Error) -> NetlinkError {
    NetlinkError {
        errno: cause.raw_os_error(),
        message: format!("{}: {cause}", dump.what()),
    }
}

#[cfg(test)]
mod tests;
