//! The name-service files every container gets, as Docker and Podman give them:
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//!
//! # Why bind-mounted from the bundle
//!
//! The files are written into the container's bundle (`<run-dir>/containers/NAME/`) and
//! bind-mounted over the image's, the way Docker does it, not written into the root file
//! system: the image stays as built, the writable layer holds only what the container
//! wrote, and gitvisor can rewrite `resolv.conf` *in place* (same inode, so the bind
//! mount shows the new text) when what it should say changes, without restarting the
//! container.
//!
//! # Which name server
//!
//! - A container on a bridge whose `dhcp:` runs gitvisor's dnsmasq asks that dnsmasq:
//!   it listens on the bridge's addresses and answers for every guest and container on
//!   the bridge by name (`host-record`), and forwards the rest upstream. The address used
//!   is the container's `gateway` when it is one of the bridge's, else the bridge's
//!   IPv4 address in the container's subnet, else its first IPv4 address.
//! - Any other container (another bridge, or no `network`) gets the host's resolver
//!   configuration without the name servers a container cannot reach: loopback ones
//!   (`127.0.0.53` of systemd-resolved, a local `127.0.0.1` cache, `::1`) and IPv6
//!   link-local ones, which name no interface the container has. When the host's
//!   `/etc/resolv.conf` is systemd-resolved's stub, the upstream servers it lists in
//!   `/run/systemd/resolve/resolv.conf` are used instead, as Docker does; when nothing
//!   reachable is left, Docker's fallback (`8.8.8.8`, `8.8.4.4`).
//!
//! Pure: the host's files are read by the seam ([`super::ContainerHost::host_resolver`])
//! in the plan's one observation.

use crate::drivers::bridge::BridgeSpec;
use std::net::IpAddr;

use crate::contract::PlanContext;
use crate::drivers::container::ContainerNetwork;
use crate::model::Kind;

/// Where `/etc/resolv.conf` of systemd-resolved's stub resolver points.
pub const SYSTEMD_STUB: &str = "127.0.0.53";

/// Docker's name servers when the host has none a container can reach.
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// Each file's name in the bundle and where the container sees it.
pub const MOUNTED: [(&str, &str); 3] = [
    (HOSTS_FILE, "/etc/hosts"),
    (HOSTNAME_FILE, "/etc/hostname"),
    (RESOLV_CONF_FILE, "/etc/resolv.conf"),
];
pub const HOSTS_FILE: &str = "hosts";
pub const HOSTNAME_FILE: &str = "hostname";
pub const RESOLV_CONF_FILE: &str = "resolv.conf";

/// The three files' contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcFiles {
    pub hosts: String,
    pub hostname: String,
    pub resolv_conf: String,
}

impl EtcFiles {
    /// Each file's name in the bundle with its content.
    pub fn by_bundle_name(&self) -> [(&'static str, &str); 3] {
        [
            (HOSTS_FILE, &self.hosts),
            (HOSTNAME_FILE, &self.hostname),
            (RESOLV_CONF_FILE, &self.resolv_conf),
        ]
    }

    /// The files of container `name`, on `network` (when it has one), with `host_resolver`
    /// the host's resolver configuration (see [`host_resolver_text`]).
    pub fn of(
        name: &str,
        network: Option<&ContainerNetwork>,
        context: &PlanContext,
        host_resolver: &str,
    ) -> Self {
        let served = network.and_then(|network| bridge_dns(network, context));
        let domain = served.as_ref().and_then(|s| s.domain.clone());
        let address = network.and_then(|n| n.address).map(|a| a.addr());
        EtcFiles {
            hosts: hosts(name, address, domain.as_deref()),
            hostname: format!("{name}\n"),
            resolv_conf: match served {
                Some(served) => bridge_resolv_conf(&served),
                None => reachable_resolv_conf(host_resolver),
            },
        }
    }
}

/// The bridge's dnsmasq, as a container on it reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BridgeDns {
    nameserver: IpAddr,
    domain: Option<String>,
}

/// The dnsmasq of the container's bridge, when the revision declares the bridge with
/// `dhcp:` (gitvisor's dnsmasq serves DNS there) and an IPv4 address for it to listen on.
fn bridge_dns(network: &ContainerNetwork, context: &PlanContext) -> Option<BridgeDns> {
    let declared = context.referenced(Kind::Bridge, &network.bridge)?;
    let bridge = declared.spec.get::<BridgeSpec>()?;
    let dhcp = bridge.dhcp.as_ref()?;
    let ipv4: Vec<_> = bridge
        .addresses
        .iter()
        .filter(|cidr| cidr.addr().is_ipv4())
        .collect();
    let gateway = network
        .gateway
        .filter(|gateway| ipv4.iter().any(|cidr| cidr.addr() == *gateway));
    let same_subnet = network.address.and_then(|own| {
        ipv4.iter()
            .find(|cidr| cidr.0.trunc().contains(&own.addr()))
            .map(|cidr| cidr.addr())
    });
    let nameserver = gateway
        .or(same_subnet)
        .or_else(|| ipv4.first().map(|cidr| cidr.addr()))?;
    Some(BridgeDns {
        nameserver,
        domain: dhcp.domain.as_ref().map(|d| d.as_str().to_owned()),
    })
}

fn bridge_resolv_conf(served: &BridgeDns) -> String {
    let mut text = String::from(
        "# Written by gitvisor: the bridge's dnsmasq (gitvisor's) answers for the guests on it.\n",
    );
    if let Some(domain) = &served.domain {
        text.push_str(&format!("search {domain}\n"));
    }
    text.push_str(&format!("nameserver {}\n", served.nameserver));
    text
}

/// Whether a container can reach name server `address`: not loopback (the container's
/// own), not IPv6 link-local (no interface of the host's is the container's).
fn reachable(address: &str) -> bool {
    let address = address.split('%').next().unwrap_or(address);
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => !v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        Err(_) => false,
    }
}

/// The host's resolver configuration with the name servers a container cannot reach
/// left out (commented, so the file says why), and Docker's fallback when none is left.
pub fn reachable_resolv_conf(host: &str) -> String {
    let mut text = String::from(
        "# Written by gitvisor from the host's resolver configuration, without the name servers a container cannot reach.\n",
    );
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let address = words.next().unwrap_or_default();
            if !reachable(address) {
                text.push_str(&format!("# {line} (unreachable from a container)\n"));
                continue;
            }
            nameservers += 1;
        }
        text.push_str(line);
        text.push('\n');
    }
    if nameservers == 0 {
        text.push_str("# No name server of the host's is reachable: Docker's defaults.\n");
        for fallback in FALLBACK_NAMESERVERS {
            text.push_str(&format!("nameserver {fallback}\n"));
        }
    }
    text
}

/// The host's resolver configuration to start from: `/etc/resolv.conf` (`etc`), unless
/// that is systemd-resolved's stub and the upstream list (`systemd`) is there.
pub fn host_resolver_text(etc: &str, systemd: Option<&str>) -> String {
    let stub = etc.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver") && words.next() == Some(SYSTEMD_STUB)
    });
    match systemd {
        Some(upstream) if stub => upstream.to_owned(),
        _ => etc.to_owned(),
    }
}

/// `/etc/hosts`: Docker's localhost lines and the container's own name on its address
/// (on `127.0.1.1`, Debian's convention, without one).
pub fn hosts(name: &str, address: Option<IpAddr>, domain: Option<&str>) -> String {
    let names = match domain {
        Some(domain) => format!("{name}.{domain} {name}"),
        None => name.to_owned(),
    };
    let own = address
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.1.1".into());
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n{own}\t{names}\n"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Spec;
    use crate::model::{Metadata, Name, Resource};

    fn network(yaml: &str) -> ContainerNetwork {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn bridge(yaml: &str) -> Arc<Resource> {
        Arc::new(Resource::new(
            Metadata::named(Name::parse("br0").unwrap()),
            Spec::new::<crate::drivers::bridge::BridgeSpec>(serde_yaml::from_str(yaml).unwrap()),
        ))
    }

    const RESOLVED_STUB: &str = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp\n";

    #[test]
    fn a_container_on_a_dhcp_bridge_asks_its_dnsmasq_on_the_gateway() {
        let context = PlanContext::default().with_revision(&[bridge(
            "addresses: [192.0.2.1/24, 10.0.0.1/24]\ndhcp: {range: 10.0.0.100-10.0.0.199, domain: lab}",
        )]);
        let on = network("{bridge: br0, address: 10.0.0.5/24, gateway: 10.0.0.1}");
        let files = EtcFiles::of("web", Some(&on), &context, RESOLVED_STUB);
        assert!(files.resolv_conf.contains("nameserver 10.0.0.1\n"));
        assert!(files.resolv_conf.contains("search lab\n"));
        assert!(!files.resolv_conf.contains("127.0.0.53"));
        assert!(files.hosts.contains("10.0.0.5\tweb.lab web\n"));
        assert!(files.hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(files.hostname, "web\n");
        // No gateway (or one that is not the bridge's): the bridge's address in the
        // container's subnet.
        let routed = network("{bridge: br0, address: 10.0.0.5/24, gateway: 10.0.0.254}");
        let files = EtcFiles::of("web", Some(&routed), &context, "");
        assert!(files.resolv_conf.contains("nameserver 10.0.0.1\n"));
    }

    #[test]
    fn without_the_bridges_dnsmasq_the_hosts_reachable_servers_are_used() {
        let context = PlanContext::default().with_revision(&[bridge("addresses: [10.0.0.1/24]")]);
        let on = network("{bridge: br0, address: 10.0.0.5/24, gateway: 10.0.0.1}");
        let host = "nameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\nsearch corp\n";
        let files = EtcFiles::of("web", Some(&on), &context, host);
        let servers: Vec<&str> = files
            .resolv_conf
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(
            servers,
            ["nameserver 192.0.2.53", "nameserver 2001:db8::53"]
        );
        assert!(files.resolv_conf.contains("search corp\n"));
        assert!(files.hosts.contains("10.0.0.5\tweb\n"));
        // No network at all: the host's too, and the name on 127.0.1.1.
        let alone = EtcFiles::of("job", None, &context, host);
        assert_eq!(alone.resolv_conf, files.resolv_conf);
        assert!(alone.hosts.contains("127.0.1.1\tjob\n"));
        // Only loopback servers: Docker's fallback.
        let fallback = reachable_resolv_conf("nameserver 127.0.0.1\n");
        assert!(fallback.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"));
    }

    #[test]
    fn systemd_resolveds_stub_gives_way_to_its_upstream_list() {
        let upstream = "nameserver 192.0.2.53\n";
        assert_eq!(host_resolver_text(RESOLVED_STUB, Some(upstream)), upstream);
        assert_eq!(host_resolver_text(RESOLVED_STUB, None), RESOLVED_STUB);
        let plain = "nameserver 192.0.2.1\n";
        assert_eq!(host_resolver_text(plain, Some(upstream)), plain);
    }
}
