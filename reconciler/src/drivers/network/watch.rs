//! The managed bridges' watch: what the kernel announces about links, addresses and
//! gitvisor's nftables table, as [`HostEvent`]s for the bridges concerned.
//!
//! # Why it looks like this
//!
//! Both facilities announce every change to whoever listens, so nothing is polled:
//!
//! - **links and addresses**: a `NETLINK_ROUTE` socket bound to the multicast groups
//!   `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR` and `RTMGRP_IPV6_IFADDR`, in the controller's
//!   own network namespace. A bridge's own message names it; a port's (a veth, a tap, an
//!   uplink) names the bridge it is enslaved to, or was until this message; an address
//!   names its link. The watch keeps the index → name map those need, seeded by one
//!   link dump and updated by every message. The socket is read one datagram at a
//!   time and each message decoded in place (`drivers/rtnl`), so an apply's burst of
//!   broadcasts is never held decoded at once.
//! - **nftables**: a `NETLINK_NETFILTER` socket bound to `NFNLGRP_NFTABLES`, the group
//!   `nft monitor` listens to. Every committed transaction is announced there, object by
//!   object (table, chain, rule), then as a new ruleset generation (`NFT_MSG_NEWGEN`). A
//!   message about a chain or rule of this instance's bridge chain (`gv<id>-br0-fwd`)
//!   names that bridge; one about the table or this instance's base chains says "some
//!   bridge" ([`HostEvent::Kind`]); other tables and other instances' chains are not
//!   ours and are ignored. The socket was chosen over `nft monitor` under
//!   `tokio::process`: no child to supervise, no text to parse, and the same kernel
//!   messages.
//!
//! Every message, whatever it names, also invalidates the driver's observation caches
//! ([`crate::contract::cache`]), so the next plan reads the host again. When a socket
//! fails (its buffer overflowed and messages were lost: `ENOBUFS`), the caches are
//! invalidated and "some bridge may have changed" is sent; a socket that cannot be read
//! at all ends its watch, and the caches go back to observing at every plan.
//!
//! Not announced, so seen by the resync only: a dnsmasq that dies, a bridge's
//! `forwarding` or `route_localnet` switch changed by hand.

use std::collections::HashMap;
use std::sync::Arc;

use rtnetlink::sys::constants::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use super::instance::Instance;
use super::rules::Hook;
use crate::contract::cache::Invalidate;
use crate::contract::{Classify, FailureClass, HostEvent, WatchHandle, WatchSink, Watching};
use crate::drivers::bridge::LinkState;
use crate::drivers::rtnl::{
    self, Dump, DumpSocket, NLMSG_ERROR, NLMSG_OVERRUN, RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR,
    RTM_NEWLINK,
};
use crate::model::{Kind, Name, ResourceId};

const RTMGRP_LINK: u32 = 1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const NETLINK_NETFILTER: isize = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;
/// `NFT_MSG_NEWTABLE` … `NFT_MSG_DELRULE`: the messages about tables, chains and rules.
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE` all are attribute 1.
const NFTA_TABLE: u16 = 1;
/// `NFTA_CHAIN_NAME` (chain messages) and `NFTA_RULE_CHAIN` (rule messages).
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;

/// A watch socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot watch {what}: opening a netlink socket failed (is this run as root, on Linux?)"
    )]
    Socket {
        what: &'static str,
        #[source]
        cause: std::io::Error,
    },
}

impl Classify for WatchError {
    fn class(&self) -> FailureClass {
        FailureClass::NeedsUser
    }
}

/// Starts both watches; `caches` are the driver's observation caches, switched on here.
pub(super) fn start(
    sink: WatchSink,
    caches: Vec<Arc<dyn Invalidate>>,
    instance: Instance,
) -> Result<Watching, WatchError> {
    let links = links_socket()?;
    let nft = nft_socket()?;
    let caches = Caches(caches);
    let mut handle = WatchHandle::default();
    handle.push(tokio::spawn(watch_links(
        links,
        sink.clone(),
        caches.clone(),
    )));
    handle.push(tokio::spawn(watch_nft(nft, sink, caches.clone(), instance)));
    caches.start_watching();
    Ok(Watching::Announced {
        what: "netlink link and address groups; nftables ruleset changes (NFNLGRP_NFTABLES)".into(),
        handle,
    })
}

#[derive(Clone)]
struct Caches(Vec<Arc<dyn Invalidate>>);

impl Caches {
    fn start_watching(&self) {
        self.0.iter().for_each(|cache| cache.start_watching());
    }
    fn invalidate(&self) {
        self.0.iter().for_each(|cache| cache.invalidate());
    }
    fn stop_watching(&self) {
        self.0.iter().for_each(|cache| cache.stop_watching());
    }
}

/// The links watch's two sockets: the multicast one, bound before the link dump that
/// seeds the index map, so nothing announced in between is missed.
struct RouteSockets {
    groups: TokioSocket,
    dumps: DumpSocket,
}

fn links_socket() -> Result<RouteSockets, WatchError> {
    let socket_error = |cause| WatchError::Socket {
        what: "links and addresses",
        cause,
    };
    let mut groups = TokioSocket::new(NETLINK_ROUTE).map_err(socket_error)?;
    groups
        .socket_mut()
        .bind(&SocketAddr::new(
            0,
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
        ))
        .map_err(socket_error)?;
    let dumps =
        DumpSocket::open().map_err(|error| socket_error(std::io::Error::other(error.message)))?;
    Ok(RouteSockets { groups, dumps })
}

fn nft_socket() -> Result<TokioSocket, WatchError> {
    let socket_error = |cause| WatchError::Socket {
        what: "nftables",
        cause,
    };
    let mut socket = TokioSocket::new(NETLINK_NETFILTER).map_err(socket_error)?;
    socket
        .socket_mut()
        .bind(&SocketAddr::new(0, 0))
        .map_err(socket_error)?;
    socket
        .socket_mut()
        .add_membership(NFNLGRP_NFTABLES)
        .map_err(socket_error)?;
    Ok(socket)
}

/// The links the watch knows, by index: enough to name a port's bridge and an
/// address's link.
#[derive(Default)]
struct Links(HashMap<u32, LinkState>);

impl Links {
    /// The bridges a link message concerns: the link, when it is one; the bridge it is
    /// enslaved to now, and the one it was before this message.
    fn on_link(&mut self, state: LinkState, deleted: bool) -> Vec<String> {
        let mut concerned = Vec::new();
        if state.is_bridge() {
            concerned.push(state.name.clone());
        }
        let before = self.0.get(&state.index).and_then(|old| old.master);
        for master in [state.master, before].into_iter().flatten() {
            if let Some(bridge) = self.0.get(&master).filter(|l| l.is_bridge()) {
                concerned.push(bridge.name.clone());
            }
        }
        if let Some(old) = self.0.get(&state.index)
            && old.name != state.name
            && old.is_bridge()
        {
            // Renamed: the old name may be a declared bridge that is now gone.
            concerned.push(old.name.clone());
        }
        if deleted {
            self.0.remove(&state.index);
        } else {
            self.0.insert(state.index, state);
        }
        concerned.sort();
        concerned.dedup();
        concerned
    }

    /// The bridge an address on link `index` concerns; `None` when its link is not a
    /// bridge, and `Some(None)` when its link is unknown.
    fn on_address(&self, index: u32) -> Option<Option<String>> {
        match self.0.get(&index) {
            Some(link) if link.is_bridge() => Some(Some(link.name.clone())),
            Some(_) => None,
            None => Some(None),
        }
    }
}

fn bridge_event(name: &str) -> HostEvent {
    match Name::parse(name) {
        Ok(name) => HostEvent::Object(ResourceId::new(Kind::Bridge, name)),
        // Not a name a manifest can declare: say "some bridge" rather than nothing.
        Err(_) => HostEvent::Kind(Kind::Bridge),
    }
}

async fn watch_links(sockets: RouteSockets, sink: WatchSink, caches: Caches) {
    let RouteSockets { groups, dumps } = sockets;
    let mut links = Links::default();
    let seeded = dumps
        .dump(Dump::Links, |body| {
            if let Some(link) = rtnl::link_of(body) {
                links.on_link(link, false);
            }
        })
        .await;
    if let Err(error) = seeded {
        tracing::debug!("the links watch could not read the links it starts from: {error}");
    }
    drop(dumps);
    // Whatever happened while the map was read: look again.
    caches.invalidate();
    loop {
        // One datagram at a time, decoded in place and dropped before the next.
        let received = groups.recv_from_full().await;
        caches.invalidate();
        let events = match received {
            Ok((buffer, _)) => route_events(&mut links, &buffer),
            Err(error) if error.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                // Messages were lost: say "some bridge", and go on listening.
                vec![HostEvent::Kind(Kind::Bridge)]
            }
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    "the netlink link watch ended: bridges are looked at again at every plan, and drift is repaired at the resync"
                );
                break;
            }
        };
        for event in events {
            tracing::debug!("netlink: {event}");
            sink.send(event);
        }
        if sink.is_closed() {
            return;
        }
    }
    caches.stop_watching();
    sink.send(HostEvent::Kind(Kind::Bridge));
}

/// The events of one datagram of link and address broadcasts, sorted and without
/// repeats; `links` follows the links it announces.
fn route_events(links: &mut Links, buffer: &[u8]) -> Vec<HostEvent> {
    let mut events = Vec::new();
    for message in rtnl::messages(buffer) {
        match message.kind {
            RTM_NEWLINK | RTM_DELLINK => {
                if let Some(link) = rtnl::link_of(message.body) {
                    let deleted = message.kind == RTM_DELLINK;
                    events.extend(links.on_link(link, deleted).iter().map(|b| bridge_event(b)));
                }
            }
            RTM_NEWADDR | RTM_DELADDR => {
                let Some(index) = rtnl::address_index(message.body) else {
                    continue;
                };
                match links.on_address(index) {
                    Some(Some(bridge)) => events.push(bridge_event(&bridge)),
                    Some(None) => events.push(HostEvent::Kind(Kind::Bridge)),
                    None => {}
                }
            }
            NLMSG_ERROR | NLMSG_OVERRUN => events.push(HostEvent::Kind(Kind::Bridge)),
            _ => {}
        }
    }
    events.sort();
    events.dedup();
    events
}

async fn watch_nft(socket: TokioSocket, sink: WatchSink, caches: Caches, instance: Instance) {
    loop {
        let received = socket.recv_from_full().await;
        caches.invalidate();
        match received {
            Ok((buffer, _)) => {
                let mut events = nft_events(&buffer, &instance);
                events.sort();
                events.dedup();
                for event in events {
                    tracing::debug!("nftables: {event}");
                    sink.send(event);
                }
            }
            Err(error) if error.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                // Messages were lost: say "some bridge", and go on listening.
                sink.send(HostEvent::Kind(Kind::Bridge));
            }
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    "the nftables watch ended: bridges are looked at again at every plan, and drift is repaired at the resync"
                );
                caches.stop_watching();
                sink.send(HostEvent::Kind(Kind::Bridge));
                return;
            }
        }
        if sink.is_closed() {
            return;
        }
    }
}

/// The events of one buffer of `NFNLGRP_NFTABLES` messages: for each message about
/// gitvisor's table (family inet), the bridge whose chain it names, or "some bridge".
fn nft_events(buffer: &[u8], instance: &Instance) -> Vec<HostEvent> {
    let mut events = Vec::new();
    let mut at = 0;
    while at + 16 <= buffer.len() {
        let length = u32::from_ne_bytes(le4(&buffer[at..])) as usize;
        if length < 16 || at + length > buffer.len() {
            // A malformed buffer: say "some bridge" rather than nothing.
            events.push(HostEvent::Kind(Kind::Bridge));
            break;
        }
        let kind = u16::from_ne_bytes([buffer[at + 4], buffer[at + 5]]);
        if let Some(event) = nft_event(kind, &buffer[at + 16..at + length], instance) {
            events.push(event);
        }
        at += align4(length);
    }
    events
}

fn nft_event(kind: u16, body: &[u8], instance: &Instance) -> Option<HostEvent> {
    let (subsystem, message) = (kind >> 8, kind & 0xff);
    if subsystem != NFNL_SUBSYS_NFTABLES || message == NFT_MSG_NEWGEN || body.len() < 4 {
        return None;
    }
    if message > NFT_MSG_DELRULE {
        // Sets, elements, objects, flowtables: gitvisor writes none, so none is ours.
        return None;
    }
    let family = body[0];
    let attributes = attributes(&body[4..]);
    let table = attributes.get(&NFTA_TABLE).map(|value| c_string(value))?;
    if family != NFPROTO_INET || table != super::nft::TABLE {
        return None;
    }
    let chain_attribute = if message <= NFT_MSG_DELTABLE {
        return Some(HostEvent::Kind(Kind::Bridge));
    } else if message < NFT_MSG_NEWCHAIN + 3 {
        NFTA_CHAIN_NAME
    } else {
        NFTA_RULE_CHAIN
    };
    let Some(chain) = attributes
        .get(&chain_attribute)
        .map(|value| c_string(value))
    else {
        return Some(HostEvent::Kind(Kind::Bridge));
    };
    if !instance.owns(&chain) {
        // Another gitvisor's chain, or the marker chain: not this instance's rules.
        // (The legacy layout, being migrated, is looked at by the resync.)
        return None;
    }
    let own = chain.split_once('-').map(|(_, rest)| rest).unwrap_or("");
    Some(match Hook::parse_chain(own) {
        Some((bridge, _)) => bridge_event(bridge),
        None => HostEvent::Kind(Kind::Bridge),
    })
}

/// The netlink attributes of `body`, by type (nested flag and byte order bits cleared).
fn attributes(body: &[u8]) -> HashMap<u16, &[u8]> {
    let mut found = HashMap::new();
    let mut at = 0;
    while at + 4 <= body.len() {
        let length = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if length < 4 || at + length > body.len() {
            break;
        }
        found.insert(kind, &body[at + 4..at + length]);
        at += align4(length);
    }
    found
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn le4(bytes: &[u8]) -> [u8; 4] {
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bridge::LinkKind;

    fn link(index: u32, name: &str, bridge: bool, master: Option<u32>) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            alias: None,
            kind: bridge.then_some(LinkKind::Bridge),
            mtu: 1500,
            up: true,
            master,
            bridge: None,
            addresses: Vec::new(),
            vlans: Vec::new(),
            vlan_of: None,
        }
    }

    #[test]
    fn a_port_names_its_bridge_now_and_before() {
        let mut links = Links::default();
        links.on_link(link(1, "br0", true, None), false);
        links.on_link(link(2, "br1", true, None), false);
        assert_eq!(
            links.on_link(link(3, "veth0", false, Some(1)), false),
            ["br0"]
        );
        assert_eq!(
            links.on_link(link(3, "veth0", false, Some(2)), false),
            ["br0", "br1"],
            "moved from br0 to br1"
        );
        assert!(
            links
                .on_link(link(4, "eth0", false, None), false)
                .is_empty()
        );
        assert_eq!(links.on_link(link(1, "br0", true, None), true), ["br0"]);
    }

    /// One `NFT_MSG_DELRULE` for rule of chain `chain` in table `table` (family inet).
    fn message(kind: u16, family: u8, attributes: &[(u16, &str)]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (kind, value) in attributes {
            let mut value = value.as_bytes().to_vec();
            value.push(0);
            let length = 4 + value.len();
            body.extend((length as u16).to_ne_bytes());
            body.extend(kind.to_ne_bytes());
            body.extend(&value);
            body.resize(align4(body.len()), 0);
        }
        let mut out = Vec::new();
        out.extend(((16 + body.len()) as u32).to_ne_bytes());
        out.extend(((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        out.extend([0u8; 10]);
        out.extend(body);
        out
    }

    #[test]
    fn nft_messages_name_this_instances_bridges_and_ignore_the_rest() {
        let instance = Instance::fixed("1a2b3c4d");
        let ours = instance.chain_of(Hook::Forward, "br-lab");
        let mut buffer = message(
            NFT_MSG_DELRULE,
            NFPROTO_INET,
            &[(NFTA_TABLE, "gitvisor"), (NFTA_RULE_CHAIN, &ours)],
        );
        buffer.extend(message(
            NFT_MSG_DELRULE,
            NFPROTO_INET,
            &[
                (NFTA_TABLE, "gitvisor"),
                (NFTA_RULE_CHAIN, "gvffffffff-br9-fwd"),
            ],
        ));
        buffer.extend(message(
            NFT_MSG_DELRULE,
            NFPROTO_INET,
            &[(NFTA_TABLE, "filter"), (NFTA_RULE_CHAIN, &ours)],
        ));
        buffer.extend(message(NFT_MSG_NEWGEN, 0, &[]));
        assert_eq!(
            nft_events(&buffer, &instance),
            [bridge_event("br-lab")],
            "another instance's chain, another table and the generation say nothing"
        );
        let base = instance.base_chain(Hook::Forward);
        let table = message(NFT_MSG_DELTABLE, NFPROTO_INET, &[(NFTA_TABLE, "gitvisor")]);
        let chain = message(
            NFT_MSG_NEWCHAIN,
            NFPROTO_INET,
            &[(NFTA_TABLE, "gitvisor"), (NFTA_CHAIN_NAME, &base)],
        );
        assert_eq!(
            nft_events(&[table, chain].concat(), &instance),
            [HostEvent::Kind(Kind::Bridge), HostEvent::Kind(Kind::Bridge)]
        );
    }
}
