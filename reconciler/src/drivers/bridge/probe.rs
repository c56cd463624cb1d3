//! What the Bridge driver needs from the host: a working rtnetlink (one read-only link
//! dump, as a plan does) and the privilege to change links (`CAP_NET_ADMIN` in the
//! effective set, read from `/proc/self/status`).

use super::BridgeError;
use super::netlink::NetlinkLinks;
use super::seam::LinkSeam;
use crate::drivers::probe::{Facility, blocking};

/// The bit of `CAP_NET_ADMIN` in the capability sets (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;

/// The Bridge driver's facilities on this host.
pub async fn probe() -> Vec<Facility> {
    let netlink = match dump().await {
        Ok(links) => Facility::ok("netlink", format!("rtnetlink dump: {links} links")),
        Err(error) => Facility::missing(
            "netlink",
            crate::contract::chain(&error),
            "run gitvisor on Linux with rtnetlink (NETLINK_ROUTE) available to it",
        ),
    };
    let privilege = blocking("net-admin", net_admin).await;
    vec![netlink, privilege]
}

/// How many links one dump lists.
async fn dump() -> Result<usize, BridgeError> {
    let links = NetlinkLinks::connect().map_err(|cause| BridgeError::Connect { cause })?;
    let dump = links
        .dump()
        .await
        .map_err(|cause| BridgeError::Observe { cause })?;
    Ok(dump.len())
}

fn net_admin() -> Facility {
    let fix = "run gitvisor as root, or grant it CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN)";
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => status,
        Err(error) => {
            return Facility::warn(
                "net-admin",
                format!("cannot read /proc/self/status to check CAP_NET_ADMIN: {error}"),
                fix,
            );
        }
    };
    match effective_capabilities(&status) {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) != 0 => {
            Facility::ok("net-admin", "CAP_NET_ADMIN is effective")
        }
        Some(_) => Facility::missing(
            "net-admin",
            "CAP_NET_ADMIN is not effective: bridges cannot be created or changed",
            fix,
        ),
        None => Facility::warn(
            "net-admin",
            "/proc/self/status has no readable CapEff line",
            fix,
        ),
    }
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_from_the_status_text() {
        let root = "Name:\tgitvisor\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(root), Some(0x1ff_ffff_ffff));
        let user = "CapEff:\t0000000000000000\n";
        assert_eq!(effective_capabilities(user), Some(0));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }
}
