//! The in-place decoding against rtnetlink's own: messages built with
//! netlink-packet-route's emitters (the bytes the kernel sends), decoded both ways.
//! The dumps themselves are checked against a real kernel in
//! `reconciler/tests/rtnl_dump.rs`.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, BridgeStpState, InetDevConf, InfoBridge, InfoData, InfoKind,
    InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_core::Emitable;

use super::*;

/// What the bridge driver read with rtnetlink's types before this module (kept here as
/// the reference).
fn decoded_by_rtnetlink(message: LinkMessage) -> LinkState {
    let mut link = LinkState {
        index: message.header.index,
        name: String::new(),
        alias: None,
        kind: None,
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
        master: None,
        bridge: None,
        addresses: Vec::new(),
        vlans: Vec::new(),
        vlan_of: None,
    };
    let mut parent = None;
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(master) if master != 0 => link.master = Some(master),
            LinkAttribute::Link(index) => parent = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => {
                            link.kind = Some(LinkKind::named(&kind.to_string()))
                        }
                        LinkInfo::Data(InfoData::Bridge(options)) => {
                            let bridge = link.bridge.get_or_insert_with(BridgeOptions::default);
                            for option in options {
                                match option {
                                    InfoBridge::StpState(state) => {
                                        bridge.stp = state != BridgeStpState::Disabled
                                    }
                                    InfoBridge::VlanFiltering(on) => bridge.vlan_filtering = on,
                                    _ => {}
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Vlan(options)) => {
                            for option in options {
                                if let InfoVlan::Id(id) = option {
                                    link.vlan_of = Some(VlanOf { id, parent: 0 });
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if link.is_bridge() && link.bridge.is_none() {
                    link.bridge = Some(BridgeOptions::default());
                }
            }
            _ => {}
        }
    }
    if let (Some(vlan_of), Some(parent)) = (&mut link.vlan_of, parent) {
        vlan_of.parent = parent;
    }
    link
}

fn bytes(message: &impl Emitable) -> Vec<u8> {
    let mut buffer = vec![0; message.buffer_len()];
    message.emit(&mut buffer);
    buffer
}

fn link_message(index: u32, up: bool, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    if up {
        message.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
    }
    message.attributes = attributes;
    message
}

fn devconf(forwarding: i32, route_localnet: i32) -> LinkAttribute {
    let mut conf = InetDevConf::default();
    conf.forwarding = forwarding;
    conf.route_localnet = route_localnet;
    conf.rp_filter = 2;
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConf(conf)])])
}

fn samples() -> Vec<LinkMessage> {
    vec![
        // Loopback: no link info, no alias.
        link_message(
            1,
            true,
            vec![
                LinkAttribute::IfName("lo".into()),
                LinkAttribute::Mtu(65536),
                devconf(0, 0),
            ],
        ),
        // A bridge gitvisor made, STP and VLAN filtering on.
        link_message(
            7,
            true,
            vec![
                LinkAttribute::IfName("br-lab".into()),
                LinkAttribute::Mtu(9000),
                LinkAttribute::IfAlias("gitvisor:managed".into()),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Bridge),
                    LinkInfo::Data(InfoData::Bridge(vec![
                        InfoBridge::HelloTime(200),
                        InfoBridge::StpState(BridgeStpState::KernelStp),
                        InfoBridge::VlanFiltering(true),
                        InfoBridge::VlanDefaultPvid(1),
                    ])),
                ]),
                devconf(1, 1),
            ],
        ),
        // A bridge with both options off, down.
        link_message(
            8,
            false,
            vec![
                LinkAttribute::IfName("br0".into()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Bridge),
                    LinkInfo::Data(InfoData::Bridge(vec![
                        InfoBridge::StpState(BridgeStpState::Disabled),
                        InfoBridge::VlanFiltering(false),
                    ])),
                ]),
            ],
        ),
        // A veth port enslaved to bridge 7.
        link_message(
            9,
            true,
            vec![
                LinkAttribute::IfName("veth0".into()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::Controller(7),
                LinkAttribute::Link(10),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
                devconf(1, 0),
            ],
        ),
        // VLAN 42 of link 2.
        link_message(
            11,
            true,
            vec![
                LinkAttribute::IfName("eth0.42".into()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::Link(2),
                LinkAttribute::Controller(0),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vlan),
                    LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(42)])),
                ]),
            ],
        ),
    ]
}

#[test]
fn links_decoded_in_place_are_what_rtnetlink_decodes() {
    for message in samples() {
        let body = bytes(&message);
        let expected = decoded_by_rtnetlink(message);
        assert_eq!(link_of(&body), Some(expected.clone()), "{}", expected.name);
        assert_eq!(link_index(&body), Some(expected.index));
    }
    assert_eq!(link_of(&[0; 8]), None, "shorter than an ifinfomsg");
}

#[test]
fn the_ipv4_switches_come_from_the_devconf_of_links_that_have_one() {
    let switches: Vec<_> = samples()
        .iter()
        .filter_map(|message| ipv4_switches_of(&bytes(message)))
        .collect();
    let switch = |forwarding, route_localnet| Ipv4Switches {
        forwarding,
        route_localnet,
    };
    assert_eq!(
        switches,
        [
            ("lo".to_owned(), switch(false, false)),
            ("br-lab".to_owned(), switch(true, true)),
            ("veth0".to_owned(), switch(true, false)),
        ],
        "links without IPv4 devconf have no switches"
    );
}

#[test]
fn addresses_are_the_local_address_when_there_is_one() {
    let message = |index, prefix, attributes| {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.prefix_len = prefix;
        message.attributes = attributes;
        bytes(&message)
    };
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    let v4 = message(
        7,
        24,
        vec![
            AddressAttribute::Address(ip("10.0.0.1")),
            AddressAttribute::Local(ip("10.0.0.1")),
            AddressAttribute::Label("br-lab".into()),
        ],
    );
    assert_eq!(address_of(&v4), Some((7, "10.0.0.1/24".parse().unwrap())));
    let point_to_point = message(
        3,
        32,
        vec![
            AddressAttribute::Address(ip("192.0.2.2")),
            AddressAttribute::Local(ip("192.0.2.1")),
        ],
    );
    assert_eq!(
        address_of(&point_to_point),
        Some((3, "192.0.2.1/32".parse().unwrap()))
    );
    let v6 = message(7, 64, vec![AddressAttribute::Address(ip("fd00::1"))]);
    assert_eq!(address_of(&v6), Some((7, "fd00::1/64".parse().unwrap())));
    assert_eq!(address_index(&v6), Some(7));
    assert_eq!(address_of(&message(7, 64, vec![])), None, "no address");
}

#[test]
fn a_datagram_is_walked_message_by_message_and_a_truncated_one_ends_it() {
    let mut datagram = Vec::new();
    for (kind, body) in [(RTM_NEWLINK, vec![1u8; 5]), (NLMSG_ERROR, vec![0u8; 4])] {
        datagram.extend(((16 + body.len()) as u32).to_ne_bytes());
        datagram.extend(kind.to_ne_bytes());
        datagram.extend(0u16.to_ne_bytes());
        datagram.extend(9u32.to_ne_bytes());
        datagram.extend(0u32.to_ne_bytes());
        datagram.extend(&body);
        datagram.resize(datagram.len().next_multiple_of(4), 0);
    }
    let walked: Vec<_> = messages(&datagram)
        .map(|m| (m.kind, m.sequence, m.body.len()))
        .collect();
    assert_eq!(walked, [(RTM_NEWLINK, 9, 5), (NLMSG_ERROR, 9, 4)]);
    let truncated = &datagram[..datagram.len() - 2];
    assert_eq!(messages(truncated).count(), 1);
}
