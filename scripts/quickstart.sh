#!/usr/bin/env bash
# The gitvisor quickstart, safe to run on any Debian/Ubuntu machine as root: it installs
# what it needs and converges examples/quickstart inside a network namespace of its own
# (gitvisor-demo) with a throwaway state dir. It runs the installed gitvisor (the Debian
# package) when there is one, else builds one. Part 2 adds a NAT network with DHCP
# (examples/guest-network) and serves a guest: a namespace standing in for a VM, plugged
# into the bridge, gets its address from gitvisor's dnsmasq and reaches an "outside"
# namespace through NAT. Nothing is created in the host's own network namespace; the
# namespaces are removed at the end (KEEP=1 keeps them).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "run it as root (it creates a network namespace): bash scripts/quickstart.sh, or sudo bash scripts/quickstart.sh" >&2
    exit 1
fi
# iproute2 to show what the kernel has; nftables because a bridge without ports is
# host-only and NAT is masquerading, both rules in gitvisor's own nftables table;
# dnsmasq for DHCP/DNS; busybox for the guest's DHCP client and ping.
if ! command -v ip >/dev/null || ! command -v nft >/dev/null || ! command -v dnsmasq >/dev/null \
    || ! command -v busybox >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 nftables \
        dnsmasq-base busybox >/dev/null
fi
# The gitvisor to run: GITVISOR_BIN=PATH, else an installed one (the Debian package,
# README "Install"), else one built here with cargo (the dev profile: a demo needs no
# optimised binary, and it takes about 40% of a release build's CPU time).
bin=${GITVISOR_BIN:-$(command -v gitvisor || true)}
if [ -z "$bin" ]; then
    . scripts/rust-floor.sh
    if ! rust_is_new_enough; then
        echo "gitvisor is not installed, and building it needs Rust $need or newer (found: ${rustc_version:-none})." >&2
        echo "Install the Debian package (README \"Install\"), or install Rust with rustup:" >&2
        echo "  curl --proto '=https' -sSf https://sh.rustup.rs | sh" >&2
        exit 1
    fi
    cargo build --locked -p gitvisor
    bin=./target/debug/gitvisor
fi
echo "Running $bin ($("$bin" --version))"

ns=gitvisor-demo
out=gitvisor-demo-out
guest=gitvisor-demo-guest
state=$(mktemp -d)
cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then
        # dnsmasq outlives a deleted namespace: stop it through its pid file first.
        for pidfile in "$state"/run/network/dhcp/*/dnsmasq.pid; do
            [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
        for n in "$guest" "$out" "$ns"; do ip netns del "$n" 2>/dev/null || true; done
        rm -rf "$state"
    fi
}
trap cleanup EXIT

gv() { ip netns exec "$ns" "$bin" --state-dir "$state" --run-dir "$state/run" "$@"; }
run() { printf '\n$ gitvisor %s\n' "$*"; gv "$@"; }

for n in "$guest" "$out" "$ns"; do ip netns del "$n" 2>/dev/null || true; done
ip netns add "$ns"

repo="$state/repo"
mkdir -p "$repo" && cp examples/quickstart/*.yaml "$repo/"

run validate "$repo"
run plan "$repo"
run apply "$repo"
run status
printf '\n$ ip -n %s -br addr   # what the kernel has now\n' "$ns"
ip -n "$ns" -br addr
run plan "$repo" --detailed-exitcode

printf '\n# Change br-svc in place: MTU 9000 -> 1500 and a second address.\n'
before=$(ip -n "$ns" -j link show br-svc | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])')
sed -i 's/mtu: 9000/mtu: 1500/; s#addresses: \[10.20.0.1/24\]#addresses: [10.20.0.1/24, 10.21.0.1/24]#' "$repo/bridges.yaml"
run plan "$repo"
run apply "$repo"
after=$(ip -n "$ns" -j link show br-svc | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])')
ip -n "$ns" -br addr show br-svc
echo "br-svc ifindex before: $before, after: $after (updated in place, never re-created)"

printf '\n# Part 2: a NAT network with DHCP serving a guest (examples/guest-network).\n'
# The "outside" (a LAN, the internet) is a namespace behind the demo host's uplink.
ip netns add "$out"
ip -n "$ns" link add up0 type veth peer name wan0 netns "$out"
ip -n "$ns" addr add 198.51.100.2/24 dev up0
ip -n "$ns" link set up0 up
ip -n "$ns" route add default via 198.51.100.1
ip -n "$out" addr add 198.51.100.1/24 dev wan0
ip -n "$out" link set wan0 up
cp examples/guest-network/*.yaml "$repo/"
run plan "$repo"
run apply "$repo"

# The guest: a namespace with the MAC guest1 is declared with, plugged into br-nat the way
# a VM's tap is (a port whose ifalias starts with `gitvisor:` is a guest's, which the
# bridge's own port list leaves alone); busybox udhcpc asks gitvisor's dnsmasq for an
# address.
ip netns add "$guest"
ip -n "$ns" link add gst0 type veth peer name eth0 netns "$guest"
ip -n "$ns" link set gst0 alias gitvisor:demo/guest1
ip -n "$guest" link set eth0 address 52:54:00:77:00:10
ip -n "$ns" link set gst0 master br-nat up
ip -n "$guest" link set lo up
ip -n "$guest" link set eth0 up
cat >"$state/udhcpc.sh" <<'SCRIPT'
#!/bin/sh
case "$1" in bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "$router"
    echo "guest got $ip from DHCP, router $router, dns $dns";;
esac
SCRIPT
chmod +x "$state/udhcpc.sh"
printf '\n$ busybox udhcpc -i eth0   # in the guest\n'
ip netns exec "$guest" busybox udhcpc -i eth0 -n -q -f -t 10 -T 1 -s "$state/udhcpc.sh" 2>/dev/null
printf '\n$ busybox nslookup guest1.lab 10.77.0.1   # in the guest: names from DHCP resolve\n'
ip netns exec "$guest" busybox nslookup guest1.lab 10.77.0.1 | grep -A1 'Name:'
printf '\n$ ping -c 1 198.51.100.1   # in the guest: the outside, through NAT\n'
ip netns exec "$guest" busybox ping -c 1 -W 2 198.51.100.1 | grep 'bytes from'
run status
printf '\n$ nft list table inet gitvisor   # the rules gitvisor owns (other tables are never touched)\n'
ip netns exec "$ns" nft list table inet gitvisor | grep -E 'masquerade|chain' | head -12

printf '\n# Remove the NAT network from the repository: apply prunes the bridge, its rules and dnsmasq.\n'
rm "$repo/nat.yaml"
run apply "$repo"
[ "${KEEP:-0}" = 1 ] && echo "Namespaces $ns, $out and $guest kept (KEEP=1); remove them with: ip netns del NAME"
exit 0
