#!/usr/bin/env bash
# Benchmark: gitvisor vs a plain `ip` shell loop, creating N Linux bridges (default 500),
# each with one IPv4 address, measured side by side in one run (benchmarks
# print ratios measured in the same run; they are not timed assertions in tests).
#
#   bash bench/bridges.sh [N]
#
# Prints:
#   (a) `gitvisor apply` from nothing, in a fresh network namespace (release build);
#       the bridges have no ports, so each is host-only and also gets two nftables rules
#       (all 500 bridges' rules in one `nft` run; needs nft);
#   (b) a shell loop of `ip link add NAME type bridge; ip addr add ADDR dev NAME;
#       ip link set NAME up` for the same N bridges, in a second fresh namespace;
#   (c) a no-op `gitvisor plan` of the N bridges (median of PLAN_RUNS runs, default 5);
#   the ratio (b)/(a), and for reference (d) the same commands fed to one `ip -batch`
#   process (no process start per command), and (e) the fair floor: that `ip -batch`
#   plus one `nft -f` of exactly the rules gitvisor wrote in (a) (listed back from the
#   first round's namespace), since (d) writes no rules; the ratio (e)/(a).
#
# With ROUNDS=k (default 1), (a), (b), (d) and (e) run k times, interleaved (a b d e a …),
# each round in fresh namespaces with a fresh state dir, and medians are reported with
# every round's time shown, so a burst of load from other processes on a shared machine
# shows up as an outlier instead of skewing the ratio; use ROUNDS=3 on a busy machine.
# Namespaces are kept until exit (the kernel tears a namespace down asynchronously,
# which would stall the next measurement), and on exit the script waits for that
# teardown: about 15-25 ms per bridge on the CI machine, ~30 s for 3 x 500 bridges,
# during which creating a namespace anywhere on the machine stalls.
#
# Needs root (network namespaces). Everything happens in namespaces created here and
# deleted on exit (trap), plus a temporary directory; nothing touches the root
# namespace. Set GITVISOR_BIN to bench a given binary instead of building
# target/release/gitvisor. hyperfine is not needed: `date +%s%N` around each command.
# Timings of gitvisor include `ip netns exec` and the process start; the loop's include
# one `ip` process start per command, which is exactly what it is measured for.
set -euo pipefail

N=${1:-500}
PLAN_RUNS=${PLAN_RUNS:-5}
ROUNDS=${ROUNDS:-1}
if ! [[ $N =~ ^[0-9]+$ ]] || (( N < 1 || N > 60000 )); then
    echo "usage: bash bench/bridges.sh [N]   (1 <= N <= 60000; env ROUNDS, PLAN_RUNS, GITVISOR_BIN)" >&2
    exit 64
fi
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ && $PLAN_RUNS =~ ^[1-9][0-9]*$ ]]; then
    echo "ROUNDS and PLAN_RUNS must be positive integers" >&2
    exit 64
fi
if (( EUID != 0 )); then
    echo "bench/bridges.sh needs root (it creates network namespaces)" >&2
    exit 77
fi

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
gitvisor_binary

TAG="gv-bench-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gv-bench.XXXXXX")
NAMESPACES=()

cleanup() {
    settle_namespaces "$TAG-settle"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

new_ns() {
    ip netns add "$1"
    NAMESPACES+=("$1")
}

now_ns() { date +%s%N; }
ms() { awk -v d="$1" 'BEGIN { printf "%.1f", d / 1e6 }'; }
median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all_ms() { local t; for t in "$@"; do printf '%s ' "$(ms "$t")"; done; }

name_of() { echo "gvb$1"; }
addr_of() { echo "10.$(( ($1 / 256) % 256 )).$(( $1 % 256 )).1/24"; }

# Counts bridges named gvb*, those up, and IPv4 addresses on them in a namespace (and,
# with a second argument, those carrying gitvisor's ownership marker).
census() {
    local ns=$1
    local bridges up addrs marked
    bridges=$(ip -n "$ns" -o link show type bridge | grep -c ': gvb[0-9]*[:@]' || true)
    up=$(ip -n "$ns" -o link show type bridge up | grep -c ': gvb[0-9]*[:@]' || true)
    addrs=$(ip -n "$ns" -o -4 addr show | grep -c ' gvb[0-9]* ' || true)
    if [[ -n ${2:-} ]]; then
        marked=$(ip -n "$ns" -o link show type bridge | grep -c 'alias gitvisor:managed' || true)
        echo "$bridges bridges ($up up, $marked marked), $addrs IPv4 addresses"
    else
        echo "$bridges bridges ($up up), $addrs IPv4 addresses"
    fi
}

# Fails the benchmark unless a namespace holds exactly N bridges, all up, N addresses.
expect_complete() {
    local ns=$1 what=$2 got
    got=$(census "$ns")
    if [[ $got != "$N bridges ($N up), $N IPv4 addresses" ]]; then
        echo "$what did not produce the full set: $got" >&2
        exit 1
    fi
}

# --- inputs ----------------------------------------------------------------------------
MANIFESTS=$WORK/manifests
mkdir -p "$MANIFESTS"
LOOP=$WORK/loop.sh
BATCH=$WORK/batch.txt
: >"$LOOP"
: >"$BATCH"
for (( i = 0; i < N; i++ )); do
    name=$(name_of "$i")
    addr=$(addr_of "$i")
    cat >"$MANIFESTS/$name.yaml" <<EOF
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: $name
spec:
  addresses: [$addr]
EOF
    printf 'ip link add %s type bridge; ip addr add %s dev %s; ip link set %s up\n' \
        "$name" "$addr" "$name" "$name" >>"$LOOP"
    printf 'link add %s type bridge\naddr add %s dev %s\nlink set %s up\n' \
        "$name" "$addr" "$name" "$name" >>"$BATCH"
done

# gitvisor in namespace $1 with state dir $2.
gv() {
    local ns=$1 state=$2
    shift 2
    ip netns exec "$ns" "$BIN" --state-dir "$state" --run-dir "$WORK/run" --host bench "$@"
}

echo "gitvisor: $BIN" >&2
echo "bridges:  $N (each with one IPv4 address), rounds: $ROUNDS, kernel $(uname -r), $(nproc) CPUs" >&2
mkdir -p "$WORK/run"
gv_check_ns="$TAG-check"
new_ns "$gv_check_ns"
gv "$gv_check_ns" "$WORK/state-check" validate "$MANIFESTS" >/dev/null

APPLY=()
LOOPT=()
BATCHT=()
FLOORT=()
RULES=$WORK/rules.nft
# Rules in a namespace's nftables ruleset.
rule_count() { ip netns exec "$1" nft -a list ruleset | grep -c '# handle [0-9]*$' | tr -d ' '; }
for (( r = 1; r <= ROUNDS; r++ )); do
    ns_gv="$TAG-gv$r" ns_ip="$TAG-ip$r" ns_batch="$TAG-batch$r" state="$WORK/state$r"
    new_ns "$ns_gv"
    new_ns "$ns_ip"
    new_ns "$ns_batch"
    ns_floor="$TAG-floor$r"
    new_ns "$ns_floor"

    # (a) gitvisor apply from nothing
    t0=$(now_ns)
    if ! gv "$ns_gv" "$state" apply "$MANIFESTS" >"$WORK/apply.out" 2>&1; then
        echo "gitvisor apply failed:" >&2
        tail -20 "$WORK/apply.out" >&2
        exit 1
    fi
    t1=$(now_ns)
    APPLY+=($(( t1 - t0 )))
    GV_CENSUS=$(census "$ns_gv" marked)
    expect_complete "$ns_gv" "gitvisor apply"
    if (( r == 1 )); then
        ip netns exec "$ns_gv" nft list ruleset >"$RULES"
        GV_RULES=$(rule_count "$ns_gv")
    fi

    # (b) ip shell loop, one `ip` process per command, inside the namespace
    t0=$(now_ns)
    ip netns exec "$ns_ip" bash -e "$LOOP"
    t1=$(now_ns)
    LOOPT+=($(( t1 - t0 )))
    IP_CENSUS=$(census "$ns_ip")
    expect_complete "$ns_ip" "the ip loop"

    # (d) one ip -batch process (reference)
    t0=$(now_ns)
    ip -n "$ns_batch" -batch "$BATCH"
    t1=$(now_ns)
    BATCHT+=($(( t1 - t0 )))
    BATCH_CENSUS=$(census "$ns_batch")
    expect_complete "$ns_batch" "ip -batch"

    # (e) the floor: the same ip -batch, then gitvisor's own rules in one nft -f
    t0=$(now_ns)
    ip -n "$ns_floor" -batch "$BATCH"
    ip netns exec "$ns_floor" nft -f "$RULES"
    t1=$(now_ns)
    FLOORT+=($(( t1 - t0 )))
    FLOOR_CENSUS="$(census "$ns_floor"), $(rule_count "$ns_floor") nftables rules"
    expect_complete "$ns_floor" "ip -batch + nft -f"
    if [[ $(rule_count "$ns_floor") != "$GV_RULES" ]]; then
        echo "nft -f did not load gitvisor's $GV_RULES rules: $FLOOR_CENSUS" >&2
        exit 1
    fi

    # Namespaces are only deleted at exit: the kernel tears a namespace down
    # asynchronously, under the RTNL lock, which would stall the next measurement.
    PLAN_NS=$ns_gv PLAN_STATE=$state
done

# --- (c) no-op plan, against the last round's gitvisor namespace ------------------------
PLANS=()
for (( r = 0; r < PLAN_RUNS; r++ )); do
    t0=$(now_ns)
    rc=0
    gv "$PLAN_NS" "$PLAN_STATE" plan "$MANIFESTS" --detailed-exitcode >"$WORK/plan.out" 2>&1 || rc=$?
    t1=$(now_ns)
    if (( rc != 0 )); then
        echo "no-op plan exited $rc (expected 0: no changes):" >&2
        tail -20 "$WORK/plan.out" >&2
        exit 1
    fi
    PLANS+=($(( t1 - t0 )))
done

A=$(median "${APPLY[@]}")
L=$(median "${LOOPT[@]}")
B=$(median "${BATCHT[@]}")
F=$(median "${FLOORT[@]}")
P=$(median "${PLANS[@]}")

# --- report ----------------------------------------------------------------------------
printf '\n%-46s %11s   %s\n' "variant, $N bridges (median)" "time" "rounds (ms)"
printf '%-46s %8s ms   %s\n' "(a) gitvisor apply, from nothing" "$(ms "$A")" "$(all_ms "${APPLY[@]}")"
printf '%-46s %8s ms   %s\n' "(b) ip shell loop (3 ip processes per bridge)" "$(ms "$L")" "$(all_ms "${LOOPT[@]}")"
printf '%-46s %8s ms   %s\n' "(c) gitvisor plan, no-op" "$(ms "$P")" "$(all_ms "${PLANS[@]}")"
printf '%-46s %8s ms   %s\n' "(d) ip -batch, one process (reference)" "$(ms "$B")" "$(all_ms "${BATCHT[@]}")"
printf '%-46s %8s ms   %s\n' "(e) ip -batch + nft -f of the same rules" "$(ms "$F")" "$(all_ms "${FLOORT[@]}")"
echo
echo "result (a): $GV_CENSUS, $GV_RULES nftables rules"
echo "result (b): $IP_CENSUS"
echo "result (d): $BATCH_CENSUS"
echo "result (e): $FLOOR_CENSUS"
echo
awk -v l="$L" -v a="$A" -v b="$B" -v f="$F" 'BEGIN {
    printf "ratio ip loop / gitvisor apply:   %.2fx  (>1: gitvisor is faster)\n", l / a
    printf "ratio ip -batch / gitvisor apply: %.2fx\n", b / a
    printf "ratio floor (e) / gitvisor apply: %.2fx  (1.0: gitvisor at the floor)\n", f / a
}'
echo "no-op plan: $(ms "$P") ms"
