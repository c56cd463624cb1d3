#!/usr/bin/env bash
# Network modes of managed bridges (docs/network.md): nft for gitvisor's table,
# dnsmasq-base for DHCP/DNS, busybox-static for the e2e lab's guests (udhcpc, nc, httpd,
# nslookup, ping), iputils-ping for manual checks.
set -euo pipefail
apt-get install -y -qq --no-install-recommends nftables dnsmasq-base busybox-static iputils-ping >/dev/null
