//! What managed bridges' networks need from the host, for `gitvisor doctor`: `nft`
//! (NAT, routing, host-only isolation and published ports), `dnsmasq` (DHCP and DNS,
//! only for bridges that declare `dhcp:`), and the kernel's 802.1Q and bridge VLAN
//! filtering options for `vlanFiltering`.

use crate::drivers::probe::{Facility, TOOL_DEADLINE, ToolError, tool_version};

/// The network facilities of this host.
pub async fn probe() -> Vec<Facility> {
    let (nft, dnsmasq) = futures::join!(
        tool_version("nft", &["--version"]),
        tool_version("dnsmasq", &["--version"])
    );
    let nft = match nft {
        Ok(version) => Facility::ok("nftables", version),
        Err(error) => Facility::missing(
            "nftables",
            describe(&error),
            "install nftables (Debian: apt install nftables); bridges without `ports` (host-only), with `nat`, `uplink` or `publish` need it",
        ),
    };
    let dnsmasq = match dnsmasq {
        Ok(version) => Facility::ok("dnsmasq", version),
        Err(error) => Facility::warn(
            "dnsmasq",
            describe(&error),
            "install dnsmasq (Debian: apt install dnsmasq-base) to use `dhcp:` on a Bridge",
        ),
    };
    let vlans = vlan_support().await;
    vec![nft, dnsmasq, vlans]
}

fn describe(error: &ToolError) -> String {
    error.to_string()
}

/// The options whose absence keeps VLAN filtering from working.
const VLAN_OPTIONS: [&str; 2] = ["CONFIG_BRIDGE_VLAN_FILTERING", "CONFIG_VLAN_8021Q"];

/// Whether the kernel has bridge VLAN filtering and 802.1Q, from its configuration:
/// `/proc/config.gz` (through `gzip -dc`), else `/boot/config-<release>`.
async fn vlan_support() -> Facility {
    let fix = "use a kernel built with CONFIG_BRIDGE_VLAN_FILTERING=y and CONFIG_VLAN_8021Q (Debian's linux-image-amd64 has both); bridges without vlanFiltering are unaffected";
    let mut gzip = tokio::process::Command::new("gzip");
    gzip.args(["-dc", "/proc/config.gz"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let from_proc = match tokio::time::timeout(TOOL_DEADLINE, gzip.output()).await {
        Ok(Ok(output)) if output.status.success() => {
            Some(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        _ => None,
    };
    let config = match from_proc {
        Some(text) => Some(("/proc/config.gz".to_owned(), text)),
        None => {
            let release = tokio::fs::read_to_string("/proc/sys/kernel/osrelease")
                .await
                .unwrap_or_default();
            let path = format!("/boot/config-{}", release.trim());
            tokio::fs::read_to_string(&path)
                .await
                .ok()
                .map(|text| (path, text))
        }
    };
    let Some((source, text)) = config else {
        return Facility::warn(
            "vlan-filtering",
            "the kernel's configuration is readable neither at /proc/config.gz nor under /boot, so VLAN support is unknown",
            fix,
        );
    };
    let missing = missing_options(&text);
    if missing.is_empty() {
        Facility::ok(
            "vlan-filtering",
            format!("{} ({source})", VLAN_OPTIONS.join(", ")),
        )
    } else {
        Facility::warn(
            "vlan-filtering",
            format!("the kernel lacks {} ({source})", missing.join(" and ")),
            fix,
        )
    }
}

/// The VLAN options a kernel configuration text does not enable.
fn missing_options(config: &str) -> Vec<&'static str> {
    VLAN_OPTIONS
        .into_iter()
        .filter(|option| {
            !config.lines().any(|line| {
                line.strip_prefix(option)
                    .is_some_and(|value| value == "=y" || value == "=m")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_from_the_configuration_text() {
        let full = "CONFIG_BRIDGE_VLAN_FILTERING=y\nCONFIG_VLAN_8021Q=m\n";
        assert!(missing_options(full).is_empty());
        let bare = "# CONFIG_BRIDGE_VLAN_FILTERING is not set\nCONFIG_VLAN_8021Q_GVRP=y\n";
        assert_eq!(missing_options(bare), VLAN_OPTIONS);
    }
}
