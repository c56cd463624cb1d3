#!/usr/bin/env bash
# Benchmark: gitvisor at scale — apply and no-op plan of N host-only bridges, each beside
# its floor, one run per size, in fresh network namespaces (benchmarks print numbers
# and ratios measured in the same run; they are not timed assertions).
#
#   bash bench/scale.sh [N...]          (default: 100 1000 10000)
#
# For each N, prints one row:
#   apply      `gitvisor apply` from nothing (links, addresses, two nftables rules each);
#   floor      the same links and addresses by one `ip -batch`, plus one `nft -f` of
#              exactly the rules gitvisor wrote (listed back from its namespace), in a
#              second namespace: what the kernel itself costs;
#   plan       a no-op `gitvisor plan` right after the apply (nftables changed, so the
#              table is listed), and again with nothing changed (the listing recorded
#              at that ruleset generation is reused), each with its peak RSS (GNU time);
#   read floor reading the same state with the stock tools: `ip -d -j link show`,
#              `ip -j addr show` and `nft -j list table inet gitvisor`;
# and the ratios floor/apply and read floor/plan (1.0: gitvisor at the floor). At the
# largest N, where the plan's time goes: `perf record` of the unchanged plan, top
# symbols by DSO (skipped without perf).
#
# Needs root (network namespaces) and nft. Everything happens in namespaces created here
# and deleted on exit (trap), plus a temporary directory. The kernel tears a namespace
# of 10 000 bridges down in minutes; the script waits for it at exit (as
# bench/bridges.sh does), so that cost does not land on whatever runs next. Set
# GITVISOR_BIN to bench a given binary instead of building target/release/gitvisor, and
# BASELINE_BIN to another build (an older commit's) to time its unchanged plan beside
# this one's, interleaved in the same namespace.
set -euo pipefail

SIZES=("$@")
(( ${#SIZES[@]} )) || SIZES=(100 1000 10000)
for n in "${SIZES[@]}"; do
    if ! [[ $n =~ ^[1-9][0-9]*$ ]] || (( n > 60000 )); then
        echo "usage: bash bench/scale.sh [N...]   (1 <= N <= 60000; env GITVISOR_BIN)" >&2
        exit 64
    fi
done
if (( EUID != 0 )); then
    echo "bench/scale.sh needs root (it creates network namespaces)" >&2
    exit 77
fi
command -v nft >/dev/null || { echo "bench/scale.sh needs nft (apt install nftables)" >&2; exit 77; }
[[ -x /usr/bin/time ]] || { echo "bench/scale.sh needs GNU time (apt install time)" >&2; exit 77; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
gitvisor_binary

TAG="gv-scale-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gv-scale.XXXXXX")
NAMESPACES=()
cleanup() {
    settle_namespaces "$TAG-settle"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
ms() { awk -v d="$1" 'BEGIN { printf "%.0f", d / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Runs "$@", printing "NANOSECONDS PEAK_KIB" (GNU time's maximum resident set size).
timed() {
    local start end peak
    start=$(now_ns)
    /usr/bin/time -f '%M' -o "$WORK/time" "$@" >/dev/null
    end=$(now_ns)
    peak=$(tail -1 "$WORK/time")
    echo "$(( end - start )) $peak"
}

largest=0
for n in "${SIZES[@]}"; do (( n > largest )) && largest=$n; done

echo "gitvisor: $BIN" >&2
echo "kernel $(uname -r), $(nproc) CPUs, nft $(nft --version | awk '{print $2}')" >&2
printf '%7s | %9s %9s %6s | %9s %8s %9s %8s %9s %6s\n' \
    N "apply ms" "floor ms" ratio "plan¹ ms" "plan¹ MB" "plan² ms" "plan² MB" "read ms" ratio
for n in "${SIZES[@]}"; do
    dir=$WORK/$n
    mkdir -p "$dir/manifests" "$dir/state" "$dir/run"
    : >"$dir/batch.txt"
    for (( i = 0; i < n; i++ )); do
        # One /24 of its own per bridge (N is at most 60 000).
        addr="10.$(( (i / 256) % 256 )).$(( i % 256 )).1/24"
        printf 'apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: gvs%d\nspec:\n  addresses: [%s]\n' \
            "$i" "$addr" >"$dir/manifests/gvs$i.yaml"
        printf 'link add gvs%d type bridge\naddr add %s dev gvs%d\nlink set gvs%d up\n' \
            "$i" "$addr" "$i" "$i" >>"$dir/batch.txt"
    done
    ns_gv="$TAG-gv-$n"
    ns_floor="$TAG-floor-$n"
    ip netns add "$ns_gv"; NAMESPACES+=("$ns_gv")
    ip netns add "$ns_floor"; NAMESPACES+=("$ns_floor")
    gv() { ip netns exec "$ns_gv" "$BIN" --state-dir "$dir/state" --run-dir "$dir/run" --host bench "$@"; }

    start=$(now_ns)
    gv apply "$dir/manifests" >"$dir/apply.log"
    apply=$(( $(now_ns) - start ))
    ip netns exec "$ns_gv" nft list table inet gitvisor >"$dir/rules.nft"

    start=$(now_ns)
    ip -n "$ns_floor" -batch "$dir/batch.txt"
    ip netns exec "$ns_floor" nft -f "$dir/rules.nft"
    floor=$(( $(now_ns) - start ))

    read -r plan1 peak1 < <(timed ip netns exec "$ns_gv" "$BIN" --state-dir "$dir/state" \
        --run-dir "$dir/run" --host bench plan "$dir/manifests")
    read -r plan2 peak2 < <(timed ip netns exec "$ns_gv" "$BIN" --state-dir "$dir/state" \
        --run-dir "$dir/run" --host bench plan "$dir/manifests")
    gv plan "$dir/manifests" --detailed-exitcode >/dev/null \
        || { echo "the plan of $n bridges after apply is not a no-op" >&2; exit 1; }

    start=$(now_ns)
    ip -n "$ns_gv" -d -j link show >/dev/null
    ip -n "$ns_gv" -j addr show >/dev/null
    ip netns exec "$ns_gv" nft -j list table inet gitvisor >/dev/null
    readfloor=$(( $(now_ns) - start ))

    printf '%7d | %9s %9s %6s | %9s %8s %9s %8s %9s %6s\n' "$n" \
        "$(ms "$apply")" "$(ms "$floor")" "$(ratio "$floor" "$apply")" \
        "$(ms "$plan1")" "$(( peak1 / 1024 ))" "$(ms "$plan2")" "$(( peak2 / 1024 ))" \
        "$(ms "$readfloor")" "$(ratio "$readfloor" "$plan2")"

    if [[ -n ${BASELINE_BIN:-} ]]; then
        # The same unchanged plan by another build, in the same namespace and state,
        # interleaved (3 rounds each, medians): a ratio not blurred by a shared machine.
        base_runs=() this_runs=()
        for _ in 1 2 3; do
            base_runs+=("$(timed ip netns exec "$ns_gv" "$BASELINE_BIN" --state-dir "$dir/state" \
                --run-dir "$dir/run" --host bench plan "$dir/manifests")")
            this_runs+=("$(timed ip netns exec "$ns_gv" "$BIN" --state-dir "$dir/state" \
                --run-dir "$dir/run" --host bench plan "$dir/manifests")")
        done
        median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
        base_ms=$(median "${base_runs[@]%% *}"); this_ms=$(median "${this_runs[@]%% *}")
        base_kb=$(median "${base_runs[@]##* }"); this_kb=$(median "${this_runs[@]##* }")
        printf '%7s   unchanged plan, interleaved x3: baseline %s ms %s MB, this %s ms %s MB (%sx faster, %sx the memory)\n' \
            "" "$(ms "$base_ms")" "$(( base_kb / 1024 ))" "$(ms "$this_ms")" "$(( this_kb / 1024 ))" \
            "$(ratio "$base_ms" "$this_ms")" "$(ratio "$this_kb" "$base_kb")"
    fi

    if (( n == largest )) && command -v perf >/dev/null; then
        ip netns exec "$ns_gv" perf record -q -F 999 -g -o "$dir/perf.data" "$BIN" \
            --state-dir "$dir/state" --run-dir "$dir/run" --host bench plan "$dir/manifests" \
            >/dev/null 2>&1 || true
        echo "where the unchanged plan of $n bridges spends its time (perf, self time by DSO and symbol):"
        perf report -i "$dir/perf.data" --no-children --sort dso,sym -g none --percent-limit 2 \
            2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 || true
    fi
done
echo "¹ right after the apply (nftables changed: the table is listed); ² nothing changed since (the recorded listing is reused)"
echo "floor: one ip -batch + one nft -f of gitvisor's rules; read: ip -d -j link, ip -j addr, nft -j list table"
