#!/usr/bin/env bash
# Benchmark: what the controller's observation cache (reconciler/src/contract/cache.rs)
# saves on a no-op plan of N managed bridges (default 1000), measured side by side in
# one run: the same driver plans RUNS times (default 7) observing the host (as one-shot commands do:
# one link dump, `nft -j list table`, /proc), then starts its watch (netlink groups,
# nftables) and plans RUNS times more from its last observation (as the controller does
# while nothing was announced). Prints both medians and their ratio.
#
#   bash bench/plan_cache.sh [N]
#
# Measured (CI machine, 2 shared cores, PROFILE=release, N=1000): observing 180-239 ms,
# from the cache 31-44 ms, ratio 5-6; the debug build: 388 vs 137 ms, ratio 3.
#
# Runs the example `reconciler/examples/plan_cache.rs` inside a network namespace
# created here and deleted on exit, so the bridges, rules and the watch never touch the
# root namespace. PROFILE=release for an optimised build (default: the debug build the
# tests use; the cached path is pure Rust, so debug understates the ratio). Needs root
# and nft.
set -euo pipefail

N=${1:-1000}
RUNS=${RUNS:-7}
PROFILE=${PROFILE:-debug}
if ! [[ $N =~ ^[0-9]+$ ]] || (( N < 1 || N > 60000 )); then
    echo "usage: bash bench/plan_cache.sh [N]   (1 <= N <= 60000; env RUNS, PROFILE)" >&2
    exit 64
fi
if (( EUID != 0 )); then
    echo "bench/plan_cache.sh needs root (it creates a network namespace)" >&2
    exit 77
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
flags=()
[[ $PROFILE == release ]] && flags+=(--release)
echo "building: cargo build ${flags[*]} -p gitvisor --example plan_cache" >&2
(cd "$ROOT" && cargo build "${flags[@]}" -q -p gitvisor --example plan_cache >&2)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
TEST_BIN=$TARGET/$PROFILE/examples/plan_cache
[[ -x $TEST_BIN ]] || { echo "cannot find the plan_cache example at $TEST_BIN" >&2; exit 1; }

NS=gvbench-cache-$$
ip netns add "$NS"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
ip -n "$NS" link set lo up
GITVISOR_BENCH_BRIDGES=$N GITVISOR_BENCH_RUNS=$RUNS \
    ip netns exec "$NS" "$TEST_BIN" 2>&1 | grep -E '^(bridges:|no-op plan)'
