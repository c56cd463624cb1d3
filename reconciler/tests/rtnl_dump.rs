//! The in-place link and address dumps (`drivers/rtnl`) against a real kernel, in a
//! network namespace of the test's own (see `common::in_own_netns`): every link and
//! address rtnetlink's own dump decodes is read the same, and the IPv4 switches read
//! from each link's devconf are the values `/proc/sys/net/ipv4/conf/<link>/` prints,
//! for exactly the interfaces listed there.

mod common;

use std::collections::BTreeMap;

use common::in_own_netns;
use futures::TryStreamExt;
use gitvisor::drivers::rtnl::{self, Dump, DumpSocket};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{BridgeStpState, LinkAttribute};

async fn host_links() -> (rtnetlink::Handle, tokio::task::JoinHandle<()>) {
    let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
    (handle, tokio::spawn(connection))
}

fn proc_switch(link: &str, switch: &str) -> bool {
    let path = format!("/proc/sys/net/ipv4/conf/{link}/{switch}");
    std::fs::read_to_string(&path).expect(&path).trim() == "1"
}

fn set_proc_switch(link: &str, switch: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{link}/{switch}");
    std::fs::write(&path, "1").expect(&path);
}

#[test]
fn the_raw_dumps_read_what_rtnetlink_and_proc_sys_read() {
    in_own_netns(
        "the_raw_dumps_read_what_rtnetlink_and_proc_sys_read",
        || async {
            let (handle, connection) = host_links().await;
            let message = rtnetlink::LinkBridge::new("br-raw")
                .stp_state(BridgeStpState::KernelStp)
                .build();
            handle.link().add(message).execute().await.expect("bridge");
            let veth = rtnetlink::LinkVeth::new("veth-a", "veth-b").build();
            handle.link().add(veth).execute().await.expect("veth pair");
            let dump: Vec<_> = handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .expect("dump");
            let index = |name: &str| {
                dump.iter()
                    .find(|l| l.attributes.contains(&LinkAttribute::IfName(name.into())))
                    .map(|l| l.header.index)
                    .expect(name)
            };
            let (bridge, veth_a) = (index("br-raw"), index("veth-a"));
            let enslave = rtnetlink::LinkUnspec::new_with_index(veth_a)
                .controller(bridge)
                .build();
            handle.link().set(enslave).execute().await.expect("enslave");
            let vlan = rtnetlink::LinkVlan::new("veth-b.42", index("veth-b"), 42).build();
            // A kernel without 802.1Q (this host's, not the VLAN guest's) has no vlan links;
            // their decoding is covered by the unit tests.
            let with_vlan = match handle.link().add(vlan).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -95 => false,
                other => other.map(|_| true).expect("vlan"),
            };
            let up = rtnetlink::LinkUnspec::new_with_index(bridge).up().build();
            handle.link().set(up).execute().await.expect("up");
            let address = handle
                .address()
                .add(bridge, "10.9.0.1".parse().unwrap(), 24);
            address.execute().await.expect("v4 address");
            let address = handle.address().add(bridge, "fd09::1".parse().unwrap(), 64);
            address.execute().await.expect("v6 address");
            set_proc_switch("br-raw", "route_localnet");
            set_proc_switch("veth-a", "forwarding");

            let socket = DumpSocket::open().expect("dump socket");
            let mut links = Vec::new();
            let mut switches = BTreeMap::new();
            socket
                .dump(Dump::Links, |body| {
                    links.extend(rtnl::link_of(body));
                    switches.extend(rtnl::ipv4_switches_of(body));
                })
                .await
                .expect("raw link dump");

            // Every link rtnetlink lists, with the same index, name, state and master.
            let expected: Vec<_> = handle
                .link()
                .get()
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .expect("dump");
            assert_eq!(links.len(), expected.len());
            for (link, message) in links.iter().zip(&expected) {
                assert_eq!(link.index, message.header.index);
                for attribute in &message.attributes {
                    match attribute {
                        LinkAttribute::IfName(name) => assert_eq!(&link.name, name),
                        LinkAttribute::Mtu(mtu) => assert_eq!(link.mtu, *mtu, "{}", link.name),
                        LinkAttribute::Controller(master) => {
                            assert_eq!(link.master, Some(*master), "{}", link.name)
                        }
                        _ => {}
                    }
                }
            }
            let find = |name: &str| links.iter().find(|l| l.name == name).expect(name);
            let br = find("br-raw");
            assert!(br.is_bridge() && br.up, "{br:?}");
            assert!(br.bridge.expect("options").stp);
            assert_eq!(find("veth-a").master, Some(bridge));
            if with_vlan {
                let vlan_of = find("veth-b.42").vlan_of.expect("a vlan link");
                assert_eq!((vlan_of.id, vlan_of.parent), (42, index("veth-b")));
            }

            // The switches, for exactly the interfaces /proc/sys lists.
            let mut listed: Vec<String> = std::fs::read_dir("/proc/sys/net/ipv4/conf")
                .expect("conf dir")
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "all" && name != "default")
                .collect();
            listed.sort();
            assert_eq!(switches.keys().cloned().collect::<Vec<_>>(), listed);
            for (name, read) in &switches {
                assert_eq!(read.forwarding, proc_switch(name, "forwarding"), "{name}");
                assert_eq!(
                    read.route_localnet,
                    proc_switch(name, "route_localnet"),
                    "{name}"
                );
            }
            assert!(switches["br-raw"].route_localnet && switches["veth-a"].forwarding);
            assert!(!switches["br-raw"].forwarding && !switches["veth-a"].route_localnet);

            // Addresses: the same as rtnetlink's dump.
            let mut addresses = Vec::new();
            socket
                .dump(Dump::Addresses, |body| {
                    addresses.extend(rtnl::address_of(body))
                })
                .await
                .expect("raw address dump");
            let mut expected: Vec<(u32, ipnet::IpNet)> = handle
                .address()
                .get()
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .expect("address dump")
                .iter()
                .filter_map(|message| {
                    let ip = message.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = ip.or_else(|| {
                        message.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    let cidr = ipnet::IpNet::new(ip, message.header.prefix_len).ok()?;
                    Some((message.header.index, cidr))
                })
                .collect();
            addresses.sort();
            expected.sort();
            assert_eq!(addresses, expected);
            assert!(addresses.contains(&(bridge, "10.9.0.1/24".parse().unwrap())));
            assert!(addresses.contains(&(bridge, "fd09::1/64".parse().unwrap())));
            connection.abort();
        },
    );
}
