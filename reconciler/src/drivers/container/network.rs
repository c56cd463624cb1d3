//! A container's network: its own network namespace (runc makes it with the container),
//! configured by gitvisor over netlink between `runc create` and `runc start`, as CNI's
//! bridge plugin does.
//!
//! Order of steps for `network.bridge`:
//!
//! 1. Find the bridge by name (it is declared, so the graph created it first).
//! 2. Remove a leftover host end or peer of an earlier, interrupted attempt (only links
//!    with the container's derived names that carry its alias, or no alias).
//! 3. Create the veth pair in the host's namespace: host end `gvc…`, peer `gvc…p`.
//! 4. Mark the host end (`ifalias gitvisor:container/NAME`): the Bridge driver never
//!    releases ports with a `gitvisor:` alias. The kernel ignores an alias at creation,
//!    so this is its own request; a crash in between leaves an unmarked veth that step 2
//!    of the next attempt removes, or that goes away with the container.
//! 5. Move the peer into the container's namespace (`/proc/PID/ns/net`).
//! 6. Enslave the host end to the bridge, put it on its VLANs when the bridge filters
//!    them (the kernel gave it VLAN 1 on the way in; see `drivers/vlan_port.rs`), and
//!    set it up.
//! 7. Inside the namespace (a thread that joins it and opens its own netlink socket
//!    there): loopback up, the peer renamed `eth0`, its address, up, and the default
//!    route via `gateway`.
//!
//! Without `network`, only step 7's loopback: the container has an isolated namespace.
//! The veth dies with the namespace, so removing a container removes its link too; the
//! host end is deleted explicitly anyway on removal, in case the namespace outlives it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::seam::{HostError, VethPlan};
use crate::drivers::bridge::NetlinkError;
use crate::drivers::vlan_port::{self, VlanDrift};
use crate::model::Vlan;

/// The name the peer has in the host's namespace, before it moves.
pub fn peer_name(host_name: &str) -> String {
    format!("{host_name}p")
}

/// The container's interface inside its namespace.
pub const CONTAINER_IFNAME: &str = "eth0";

fn netlink(operation: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> HostError {
    let operation = operation.into();
    move |error| HostError::Netlink {
        operation,
        source: netlink_error(error),
    }
}

fn netlink_error(error: rtnetlink::Error) -> NetlinkError {
    match &error {
        rtnetlink::Error::NetlinkError(message) => match message.code {
            Some(code) => NetlinkError::from_errno(code.get().abs()),
            None => NetlinkError::other(error.to_string()),
        },
        _ => NetlinkError::other(error.to_string()),
    }
}

/// A link by name: its index and alias, or `None`.
async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<(u32, Option<String>)>, HostError> {
    let found = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(Some(message)) => {
            let alias = message.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfAlias(alias) => Some(alias.clone()),
                _ => None,
            });
            Ok(Some((message.header.index, alias)))
        }
        Ok(None) => Ok(None),
        Err(error) => {
            let error = netlink_error(error);
            if error.is_errno(nix::errno::Errno::ENODEV) {
                Ok(None)
            } else {
                Err(HostError::Netlink {
                    operation: format!("look up link {name}"),
                    source: error,
                })
            }
        }
    }
}

/// Deletes the link `name` when it is gitvisor's leftover for this container (its alias,
/// or none); refuses to touch anyone else's.
pub async fn remove_leftover(handle: &Handle, name: &str, alias: &str) -> Result<(), HostError> {
    let Some((index, found)) = link_by_name(handle, name).await? else {
        return Ok(());
    };
    match found.as_deref() {
        None => {}
        Some(found) if found == alias => {}
        Some(other) => {
            return Err(HostError::Invalid(format!(
                "a link named {name} exists with alias {other:?}, which gitvisor did not make; remove or rename it"
            )));
        }
    }
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(error) => {
            let error = netlink_error(error);
            if error.is_errno(nix::errno::Errno::ENODEV) {
                Ok(())
            } else {
                Err(HostError::Netlink {
                    operation: format!("delete leftover link {name}"),
                    source: error,
                })
            }
        }
    }
}

/// Sets up the network of the container whose init is `pid`.
pub async fn connect(handle: &Handle, pid: u32, veth: Option<&VethPlan>) -> Result<(), HostError> {
    let netns_path = format!("/proc/{pid}/ns/net");
    let netns = std::fs::File::open(&netns_path).map_err(HostError::io(
        "open the container's network namespace",
        &netns_path,
    ))?;
    let Some(veth) = veth else {
        return inside(netns, None).await;
    };
    let peer = peer_name(&veth.host_name);
    let Some((bridge, _)) = link_by_name(handle, &veth.bridge).await? else {
        return Err(HostError::Invalid(format!(
            "bridge {} does not exist on this host",
            veth.bridge
        )));
    };
    remove_leftover(handle, &veth.host_name, &veth.alias).await?;
    remove_leftover(handle, &peer, &veth.alias).await?;
    handle
        .link()
        .add(LinkMessageBuilder::<LinkVeth>::new(&veth.host_name, &peer).build())
        .execute()
        .await
        .map_err(netlink(format!(
            "create veth pair {} / {peer}",
            veth.host_name
        )))?;
    let (host_index, _) = link_by_name(handle, &veth.host_name)
        .await?
        .ok_or_else(|| {
            HostError::Unexpected(format!(
                "veth {} vanished after its creation",
                veth.host_name
            ))
        })?;
    let (peer_index, _) = link_by_name(handle, &peer)
        .await?
        .ok_or_else(|| HostError::Unexpected(format!("veth {peer} vanished after its creation")))?;
    set(
        handle,
        LinkUnspec::new_with_index(host_index)
            .alias(veth.alias.clone())
            .build(),
        format!("mark {} ({})", veth.host_name, veth.alias),
    )
    .await?;
    set(
        handle,
        LinkUnspec::new_with_index(peer_index)
            .setns_by_fd(netns.as_raw_fd())
            .build(),
        format!("move {peer} into the container's network namespace"),
    )
    .await?;
    set(
        handle,
        LinkUnspec::new_with_index(host_index)
            .controller(bridge)
            .build(),
        format!("enslave {} to bridge {}", veth.host_name, veth.bridge),
    )
    .await?;
    if let Some(drift) = veth.vlans.as_deref().and_then(VlanDrift::after_enslave) {
        drift
            .send(handle, host_index, false)
            .await
            .map_err(|source| HostError::Netlink {
                operation: format!("put {} on its VLANs", veth.host_name),
                source,
            })?;
    }
    set(
        handle,
        LinkUnspec::new_with_index(host_index).up().build(),
        format!("set {} up", veth.host_name),
    )
    .await?;
    inside(
        netns,
        Some(Inside {
            peer,
            address: veth.address.map(|c| c.0),
            gateway: veth.gateway,
        }),
    )
    .await
}

/// Every bridge port's VLANs, by link name (one bridge VLAN dump).
pub async fn port_vlans(handle: &Handle) -> Result<BTreeMap<String, Vec<Vlan>>, HostError> {
    let ports = vlan_port::dump(handle)
        .await
        .map_err(|source| HostError::Netlink {
            operation: "read the VLANs of bridge ports".into(),
            source,
        })?;
    Ok(ports
        .into_iter()
        .map(|port| (port.name, port.vlans))
        .collect())
}

/// Changes the VLANs of the host veth end `veth` in place, when it carries the
/// container's marker `alias` (anything else under that name is not gitvisor's).
pub async fn set_vlans(
    handle: &Handle,
    veth: &str,
    alias: &str,
    drift: &VlanDrift,
) -> Result<(), HostError> {
    let index = match link_by_name(handle, veth).await? {
        Some((index, Some(found))) if found == alias => index,
        Some((_, found)) => {
            return Err(HostError::Invalid(format!(
                "link {veth} carries alias {found:?}, not {alias:?}; gitvisor changes the VLANs of its own veth only; remove the link or the container"
            )));
        }
        None => {
            return Err(HostError::Invalid(format!(
                "the container's veth {veth} is gone; the container must be recreated (remove it, or change its network)"
            )));
        }
    };
    drift
        .send(handle, index, false)
        .await
        .map_err(|source| HostError::Netlink {
            operation: format!("change the VLANs of {veth}"),
            source,
        })
}

async fn set(
    handle: &Handle,
    message: netlink_packet_route::link::LinkMessage,
    operation: String,
) -> Result<(), HostError> {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(netlink(operation))
}

struct Inside {
    peer: String,
    address: Option<ipnet::IpNet>,
    gateway: Option<IpAddr>,
}

/// Configures the inside of the namespace `netns` from a thread that joins it (a
/// netlink socket belongs to the namespace of the thread that opens it). The thread
/// ends afterwards, so no other work ever runs in the container's namespace.
async fn inside(netns: std::fs::File, plan: Option<Inside>) -> Result<(), HostError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gv-netns".into())
        .spawn(move || {
            let result = configure_inside(&netns, plan);
            let _ = sender.send(result);
        })
        .map_err(HostError::io(
            "start a thread for",
            "the container's network namespace",
        ))?;
    receiver
        .await
        .map_err(|_| HostError::Unexpected("the network namespace thread died".into()))?
}

fn configure_inside(netns: &std::fs::File, plan: Option<Inside>) -> Result<(), HostError> {
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        HostError::io("join the container's network namespace", "/proc/PID/ns/net")(
            std::io::Error::from_raw_os_error(errno as i32),
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HostError::io(
            "start a runtime in",
            "the container's network namespace",
        ))?;
    runtime.block_on(async move {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(HostError::io(
            "open a netlink socket in",
            "the container's network namespace",
        ))?;
        let connection = tokio::spawn(connection);
        let result = configure(&handle, plan).await;
        connection.abort();
        result
    })
}

async fn configure(handle: &Handle, plan: Option<Inside>) -> Result<(), HostError> {
    if let Some((lo, _)) = link_by_name(handle, "lo").await? {
        set(
            handle,
            LinkUnspec::new_with_index(lo).up().build(),
            "set lo up".into(),
        )
        .await?;
    }
    let Some(plan) = plan else {
        return Ok(());
    };
    let (index, _) = link_by_name(handle, &plan.peer).await?.ok_or_else(|| {
        HostError::Unexpected(format!("{} is not in the container's namespace", plan.peer))
    })?;
    set(
        handle,
        LinkUnspec::new_with_index(index)
            .name(CONTAINER_IFNAME.to_owned())
            .build(),
        format!("rename {} to {CONTAINER_IFNAME}", plan.peer),
    )
    .await?;
    if let Some(address) = plan.address {
        handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .execute()
            .await
            .map_err(netlink(format!(
                "add address {address} to {CONTAINER_IFNAME}"
            )))?;
    }
    set(
        handle,
        LinkUnspec::new_with_index(index).up().build(),
        format!("set {CONTAINER_IFNAME} up"),
    )
    .await?;
    match plan.gateway {
        Some(IpAddr::V4(gateway)) => handle
            .route()
            .add(
                RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .gateway(gateway)
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("add default route via {gateway}")))?,
        Some(IpAddr::V6(gateway)) => handle
            .route()
            .add(
                RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .gateway(gateway)
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("add default route via {gateway}")))?,
        None => {}
    }
    Ok(())
}
