#!/usr/bin/env bash
# Benchmark: NAT and published ports for N guests (default 200) behind one bridge:
# gitvisor's one nftables transaction per bridge change against one `nft` command per
# rule, measured side by side in one run (ratios from the same run, never a
# timed assertion in a test).
#
#   bash bench/network.sh [N]
#
# Prints:
#   (a) `gitvisor apply` from nothing of one NAT bridge publishing N ports (one per
#       guest: host port 10000+i -> 10.64.x.y:80), in a fresh network namespace: link,
#       forwarding switches and one nft transaction (release build);
#   (b) the same rules (masquerade, forward accepts, a DNAT in prerouting and one in
#       output per guest) written by a shell loop of one `nft add …` per rule, in a
#       second fresh namespace;
#   (c) for reference, (b)'s rules as one `nft -f` transaction (the floor);
#   (d) a no-op `gitvisor plan` of the same manifest (one `nft -j list table`);
#   and the ratio (b)/(a).
#
# Needs root and nft. Everything happens in namespaces created here and deleted on exit;
# nothing touches the root namespace. GITVISOR_BIN benches a given binary instead of
# building target/release/gitvisor.
set -euo pipefail

N=${1:-200}
if ! [[ $N =~ ^[0-9]+$ ]] || (( N < 1 || N > 50000 )); then
    echo "usage: bash bench/network.sh [N]   (1 <= N <= 50000; env GITVISOR_BIN)" >&2
    exit 64
fi
if (( EUID != 0 )); then
    echo "bench/network.sh needs root (it creates network namespaces)" >&2
    exit 77
fi
command -v nft >/dev/null || { echo "bench/network.sh needs nft (apt install nftables)" >&2; exit 77; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
gitvisor_binary

TAG="gv-nbench-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gv-nbench.XXXXXX")
NAMESPACES=()
cleanup() {
    local ns
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
new_ns() { ip netns add "$1"; NAMESPACES+=("$1"); }
now_ns() { date +%s%N; }
ms() { awk -v d="$1" 'BEGIN { printf "%.1f", d / 1e6 }'; }
guest() { echo "10.64.$(( ($1 + 2) / 250 )).$(( ($1 + 2) % 250 + 2 ))"; }

# --- inputs ----------------------------------------------------------------------------
mkdir -p "$WORK/manifests" "$WORK/run"
{
    printf '%s\n' \
        "apiVersion: gitvisor.dev/v1alpha1" \
        "kind: Bridge" \
        "metadata:" \
        "  name: gvnat" \
        "spec:" \
        "  addresses: [10.64.0.1/16]" \
        "  nat: true" \
        "  publish:"
    for (( i = 0; i < N; i++ )); do
        echo "    - {address: $(guest "$i"), hostPort: $(( 10000 + i )), port: 80}"
    done
} >"$WORK/manifests/gvnat.yaml"

LOOP=$WORK/loop.sh
BATCH=$WORK/batch.nft
T="inet bench"
{
    echo "nft add table $T"
    echo "nft add chain $T forward '{ type filter hook forward priority 0; policy accept; }'"
    echo "nft add chain $T postrouting '{ type nat hook postrouting priority 100; policy accept; }'"
    echo "nft add chain $T prerouting '{ type nat hook prerouting priority -100; policy accept; }'"
    echo "nft add chain $T output '{ type nat hook output priority -100; policy accept; }'"
    echo "nft add rule $T forward iifname gvnat accept"
    echo "nft add rule $T forward ct state established,related oifname gvnat accept"
    echo "nft add rule $T forward ct status dnat oifname gvnat accept"
    echo "nft add rule $T postrouting ip saddr 10.64.0.0/16 ip daddr != 10.64.0.0/16 masquerade"
    echo "nft add rule $T postrouting ip saddr 10.64.0.0/16 ip daddr 10.64.0.0/16 ct status dnat masquerade"
    for (( i = 0; i < N; i++ )); do
        echo "nft add rule $T prerouting fib daddr type local tcp dport $(( 10000 + i )) dnat ip to $(guest "$i"):80"
        echo "nft add rule $T output fib daddr type local ip daddr != 127.0.0.0/8 tcp dport $(( 10000 + i )) dnat ip to $(guest "$i"):80"
    done
} >"$LOOP"
# The same commands as one transaction: drop the `nft ` and the shell quoting.
sed -e 's/^nft //' -e "s/'//g" "$LOOP" >"$BATCH"
RULES=$(grep -c ' rule ' "$LOOP")

gv() {
    local ns=$1
    shift
    ip netns exec "$ns" "$BIN" --state-dir "$WORK/state" --run-dir "$WORK/run" --host bench "$@"
}

echo "gitvisor: $BIN" >&2
echo "guests: $N, $RULES rules, kernel $(uname -r), $(nproc) CPUs, $(nft --version)" >&2

ns_gv="$TAG-gv" ns_loop="$TAG-loop" ns_batch="$TAG-batch"
new_ns "$ns_gv"; new_ns "$ns_loop"; new_ns "$ns_batch"

# (a) gitvisor
t0=$(now_ns)
gv "$ns_gv" apply "$WORK/manifests" >"$WORK/apply.out" 2>&1 || { cat "$WORK/apply.out" >&2; exit 1; }
t1=$(now_ns)
A=$(( t1 - t0 ))
GV_RULES=$(ip netns exec "$ns_gv" nft list table inet gitvisor | grep -c 'comment "gvnat: ' || true)

# (b) one nft per rule
t0=$(now_ns)
ip netns exec "$ns_loop" bash -e "$LOOP"
t1=$(now_ns)
B=$(( t1 - t0 ))
LOOP_RULES=$(ip netns exec "$ns_loop" nft list table inet bench | grep -E 'accept|masquerade|dnat' | grep -vc policy || true)

# (c) one nft -f transaction
t0=$(now_ns)
ip netns exec "$ns_batch" nft -f "$BATCH"
t1=$(now_ns)
C=$(( t1 - t0 ))

# (d) no-op plan
t0=$(now_ns)
gv "$ns_gv" plan "$WORK/manifests" --detailed-exitcode >/dev/null
t1=$(now_ns)
D=$(( t1 - t0 ))

echo
echo "NAT + $N published ports ($RULES rules; gitvisor wrote $GV_RULES rules and jumps, the loop $LOOP_RULES rules)"
printf '  (a) gitvisor apply (bridge + one transaction)   %10s ms\n' "$(ms "$A")"
printf '  (b) one nft command per rule                    %10s ms\n' "$(ms "$B")"
printf '  (c) one nft -f transaction (reference floor)    %10s ms\n' "$(ms "$C")"
printf '  (d) gitvisor plan, nothing to do                %10s ms\n' "$(ms "$D")"
awk -v a="$A" -v b="$B" -v c="$C" 'BEGIN {
    printf "  (b)/(a) = %.1fx faster with gitvisor; (a)/(c) = %.1fx the bare transaction\n", b / a, a / c }'
