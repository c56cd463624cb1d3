//! The dnsmasq of one bridge: its configuration, generated from the manifests, and its
//! lease file.
//!
//! Each bridge with `dhcp:` gets a directory of its own under the run dir
//! (`<run-dir>/network/dhcp/<bridge>/`) holding `dnsmasq.conf`, `dnsmasq.pid` and
//! `leases`. The configuration's first line is [`CONFIG_MARKER`] with the bridge's name;
//! a dnsmasq is gitvisor's when its pid file is in that directory *and* its command line
//! names that configuration file (`--conf-file=…`), so a reused pid or someone else's
//! dnsmasq is never signalled.
//!
//! The server is bound to the bridge alone (`interface=` with `bind-dynamic`, which
//! also copes with the bridge getting its address after dnsmasq starts), reads neither
//! `/etc/hosts` nor `/etc/dnsmasq.conf`, and answers for the declared domain itself
//! (`local=/lab/`) so guest names never leak to upstream servers.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::model::{Dhcp, MacAddress};

/// The first line of every configuration gitvisor writes (followed by the bridge name).
pub const CONFIG_MARKER: &str = "# gitvisor:managed dnsmasq for bridge";

/// Default lease time when `leaseTime` is not declared.
pub const DEFAULT_LEASE_SECONDS: u64 = 3600;

/// The files of one bridge's dnsmasq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpPaths {
    pub dir: PathBuf,
}

impl DhcpPaths {
    /// `<network dir>/dhcp/<bridge>`.
    pub fn new(network_dir: &Path, bridge: &str) -> Self {
        DhcpPaths {
            dir: network_dir.join("dhcp").join(bridge),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }

    pub fn leases(&self) -> PathBuf {
        self.dir.join("leases")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// The argument that names the configuration, which also identifies the process.
    pub fn conf_arg(&self) -> String {
        format!("--conf-file={}", self.config().display())
    }
}

/// A guest the server knows by MAC address: a fixed address, a name, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: MacAddress,
    pub address: Option<Ipv4Addr>,
    pub name: Option<String>,
}

/// A name that resolves to an address without a lease (a container with a fixed address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    pub address: Ipv4Addr,
}

/// The configuration of `bridge`'s dnsmasq.
pub fn render(
    bridge: &str,
    dhcp: &Dhcp,
    subnet: Ipv4Net,
    hosts: &[DhcpHost],
    records: &[HostRecord],
    paths: &DhcpPaths,
    upstream_dns: bool,
) -> String {
    let lease = dhcp
        .lease_time
        .map(|d| d.0.as_secs())
        .unwrap_or(DEFAULT_LEASE_SECONDS);
    let mut text = String::new();
    let mut line = |l: String| {
        text.push_str(&l);
        text.push('\n');
    };
    line(format!("{CONFIG_MARKER} {bridge}"));
    line("# Written by gitvisor from the Bridge's manifest; edits are overwritten.".into());
    line(format!("interface={bridge}"));
    line("bind-dynamic".into());
    line("except-interface=lo".into());
    line("no-hosts".into());
    if !upstream_dns {
        line("no-resolv".into());
    }
    line("dhcp-authoritative".into());
    line(format!("pid-file={}", paths.pid_file().display()));
    line(format!("dhcp-leasefile={}", paths.leases().display()));
    line(format!("log-facility={}", paths.log().display()));
    line("user=nobody".into());
    if let Some(domain) = &dhcp.domain {
        line(format!("domain={domain}"));
        line(format!("local=/{domain}/"));
        line("expand-hosts".into());
    }
    line(format!(
        "dhcp-range={},{},{},{lease}",
        dhcp.range.first,
        dhcp.range.last,
        subnet.netmask()
    ));
    for host in hosts {
        let mut entry = format!("dhcp-host={}", host.mac);
        if let Some(address) = host.address {
            let _ = write!(entry, ",{address}");
        }
        if let Some(name) = &host.name {
            let _ = write!(entry, ",{name}");
        }
        let _ = write!(entry, ",{lease}");
        line(entry);
    }
    for record in records {
        let fqdn = dhcp
            .domain
            .as_ref()
            .map(|domain| format!("{}.{domain},", record.name))
            .unwrap_or_default();
        line(format!(
            "host-record={fqdn}{},{}",
            record.name, record.address
        ));
    }
    text
}

/// One lease in a dnsmasq lease file; in JSON (`status`, `GET /v1/status`) as `mac`,
/// `address`, `hostname` and `expiresUnix`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// Seconds since the epoch when it expires (0: never).
    #[serde(rename = "expiresUnix")]
    pub expires: u64,
    pub mac: String,
    pub address: String,
    /// The name the guest gave, if any.
    #[serde(rename = "hostname")]
    pub name: Option<String>,
}

/// Reads a dnsmasq lease file (`EXPIRY MAC ADDRESS NAME CLIENT-ID` per line; a name of
/// `*` is none). Lines that do not read so are skipped: dnsmasq owns the file.
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let expires = fields.next()?.parse().ok()?;
            let mac = fields.next()?.to_owned();
            let address = fields.next()?.to_owned();
            let name = fields.next().filter(|n| *n != "*").map(str::to_owned);
            Some(Lease {
                expires,
                mac,
                address,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dhcp(yaml: &str) -> Dhcp {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_configuration_binds_to_the_bridge_and_lists_every_guest() {
        let paths = DhcpPaths::new(Path::new("/run/gitvisor/network"), "br0");
        let spec = dhcp("range: 10.0.0.100-10.0.0.199\nleaseTime: 10m\ndomain: lab");
        let text = render(
            "br0",
            &spec,
            "10.0.0.0/24".parse().unwrap(),
            &[DhcpHost {
                mac: "52:54:00:00:00:10".parse().unwrap(),
                address: Some(Ipv4Addr::new(10, 0, 0, 10)),
                name: Some("vm1".into()),
            }],
            &[HostRecord {
                name: "web".into(),
                address: Ipv4Addr::new(10, 0, 0, 20),
            }],
            &paths,
            false,
        );
        assert!(text.starts_with("# gitvisor:managed dnsmasq for bridge br0\n"));
        for line in [
            "interface=br0",
            "bind-dynamic",
            "no-hosts",
            "no-resolv",
            "pid-file=/run/gitvisor/network/dhcp/br0/dnsmasq.pid",
            "dhcp-leasefile=/run/gitvisor/network/dhcp/br0/leases",
            "local=/lab/",
            "dhcp-range=10.0.0.100,10.0.0.199,255.255.255.0,600",
            "dhcp-host=52:54:00:00:00:10,10.0.0.10,vm1,600",
            "host-record=web.lab,web,10.0.0.20",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(
            paths.conf_arg(),
            "--conf-file=/run/gitvisor/network/dhcp/br0/dnsmasq.conf"
        );
    }

    #[test]
    fn leases_read_with_and_without_names() {
        let leases = parse_leases(
            "1700000000 52:54:00:00:00:10 10.0.0.10 vm1 01:52:54:00:00:00:10\n0 52:54:00:00:00:11 10.0.0.150 * *\ngarbage\n",
        );
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].name.as_deref(), Some("vm1"));
        assert_eq!(leases[1].name, None);
        assert_eq!(leases[1].address, "10.0.0.150");
    }
}
