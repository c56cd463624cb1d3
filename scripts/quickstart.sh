#!/usr/bin/env bash
# The gitvisor quickstart, safe to run on any Debian/Ubuntu machine as root: it installs
# what it needs, builds gitvisor, and converges examples/quickstart inside a network
# namespace of its own (gitvisor-demo) with a throwaway state dir. Nothing is created in
# the host's own network namespace; the namespace is removed at the end (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "run it as root (it creates a network namespace): bash scripts/quickstart.sh, or sudo bash scripts/quickstart.sh" >&2
    exit 1
fi
# iproute2 to show what the kernel has; nftables because a bridge without ports is
# host-only, which gitvisor enforces with rules in its own nftables table.
if ! command -v ip >/dev/null || ! command -v nft >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 nftables >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is needed: install Rust (https://rustup.rs) or apt-get install cargo" >&2
    exit 1
fi

ns=gitvisor-demo
state=$(mktemp -d)
cleanup() {
    [ "${KEEP:-0}" = 1 ] || ip netns del "$ns" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT

cargo build --release -p gitvisor
gv() { ip netns exec "$ns" ./target/release/gitvisor --state-dir "$state" "$@"; }
run() { printf '\n$ gitvisor %s\n' "$*"; gv "$@"; }

ip netns del "$ns" 2>/dev/null || true
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
[ "${KEEP:-0}" = 1 ] && echo "Namespace $ns kept (KEEP=1); remove it with: ip netns del $ns"
exit 0
