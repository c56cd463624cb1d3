#!/usr/bin/env bash
# Benchmark: loading N Bridge documents (default 10 000) from ONE file versus the same
# documents in N files, measured side by side in one run (benchmarks print
# ratios measured in the same run; they are not timed assertions in tests).
#
#   bash bench/load.sh [N]
#
# Generates both layouts in a temporary directory (each document is a Bridge with an
# MTU, one address and a label, about 160 bytes), then times `gitvisor validate` on each,
# ROUNDS times (default 5), interleaved (one, many, one, many, …) so that a burst of load
# from other processes hits both alike, and prints every round, the medians and the
# ratio one-file / many-files. Loading is linear in the size of a file, so the ratio
# should be at or below 1 (one file saves N opens); the goal is at most 1.5.
#
# Needs no root: `validate` only reads files. Set GITVISOR_BIN to bench a given binary
# instead of building target/release/gitvisor.
set -euo pipefail

N=${1:-10000}
ROUNDS=${ROUNDS:-5}
if ! [[ $N =~ ^[1-9][0-9]*$ ]] || (( N > 60000 )); then
    echo "usage: bash bench/load.sh [N]   (1 <= N <= 60000; env ROUNDS, GITVISOR_BIN)" >&2
    exit 64
fi
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
    echo "ROUNDS must be a positive integer" >&2
    exit 64
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${GITVISOR_BIN:-} ]]; then
    BIN=$GITVISOR_BIN
else
    (cd "$ROOT" && cargo build --release -q -p gitvisor)
    BIN=$ROOT/target/release/gitvisor
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/many"

document() {
    local i=$1
    printf 'apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: br-%d\n  labels: {bench: load}\nspec:\n  mtu: 1500\n  addresses: [10.%d.%d.1/24]\n' \
        "$i" $(( i / 256 )) $(( i % 256 ))
}

echo "generating $N documents in both layouts under $WORK"
for (( i = 0; i < N; i++ )); do
    document "$i" > "$WORK/many/br-$i.yaml"
done
# The one file is the many files joined with document markers, byte for byte the same
# documents.
for (( i = 0; i < N; i++ )); do
    [[ $i -gt 0 ]] && echo '---'
    cat "$WORK/many/br-$i.yaml"
done > "$WORK/one.yaml"
echo "one file: $(wc -c < "$WORK/one.yaml") bytes; many files: $N"

# Milliseconds one `gitvisor validate` takes; it must succeed.
time_validate() {
    local start end
    start=$(date +%s%N)
    if ! "$BIN" validate "$1" > /dev/null; then
        echo "gitvisor validate $1 failed" >&2
        exit 1
    fi
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}

median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# One warm-up of each, so the page cache holds both layouts before anything is timed.
time_validate "$WORK/one.yaml" > /dev/null
time_validate "$WORK/many" > /dev/null

one=()
many=()
for (( round = 1; round <= ROUNDS; round++ )); do
    one+=("$(time_validate "$WORK/one.yaml")")
    many+=("$(time_validate "$WORK/many")")
    printf 'round %d: one file %6d ms   %d files %6d ms\n' "$round" "${one[-1]}" "$N" "${many[-1]}"
done

one_median=$(median "${one[@]}")
many_median=$(median "${many[@]}")
echo
echo "median: one file ${one_median} ms, $N files ${many_median} ms"
awk -v a="$one_median" -v b="$many_median" 'BEGIN {
    if (b <= 0) { print "ratio one-file/many-files: n/a (too fast to measure)"; exit }
    printf "ratio one-file/many-files: %.2f (goal: <= 1.50)\n", a / b
}'
