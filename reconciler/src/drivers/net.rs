//! Small facts about addresses that more than one driver (and its fake) needs.

use ipnet::IpNet;

/// An IPv6 link-local address (`fe80::/10`), which the kernel gives every link that goes
/// up, unasked.
pub fn is_ipv6_link_local(cidr: &IpNet) -> bool {
    matches!(cidr, IpNet::V6(net) if net.addr().is_unicast_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv6_fe80_is_link_local() {
        let net = |text: &str| text.parse::<IpNet>().expect("test CIDR parses");
        assert!(is_ipv6_link_local(&net("fe80::1/64")));
        assert!(is_ipv6_link_local(&net("febf::1/64")));
        assert!(!is_ipv6_link_local(&net("fd00::1/64")));
        assert!(!is_ipv6_link_local(&net("169.254.0.1/16")));
    }
}
