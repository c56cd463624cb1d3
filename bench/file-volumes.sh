#!/usr/bin/env bash
# File-volume benchmark, on the host (no guest, no LVM): a no-op `gitvisor plan` over N
# file-backed Volumes (one batch: list the directory, read each file's xattrs and qcow2
# header) against observing the same files the obvious way, `qemu-img info --output=json`
# once per file; side by side, interleaved rounds, medians and the ratio. Also prints how
# long the apply that made them took. Needs qemu-img; GITVISOR_BIN picks a build (else
# target/release/gitvisor is built).
#
#   bench/file-volumes.sh [N=100] [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-100}
ROUNDS=${2:-5}
gitvisor_binary
WORK=$(mktemp -d /tmp/gv-bench-file-volumes.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/m" "$WORK/s" "$WORK/r" "$WORK/volumes"
for i in $(seq 1 "$N"); do
  printf 'apiVersion: gitvisor.dev/v1alpha1\nkind: Volume\nmetadata:\n  name: v%s\nspec:\n  directory: %s\n  size: 64MiB\n---\n' "$i" "$WORK/volumes"
done > "$WORK/m/volumes.yaml"
gv() { "$BIN" --state-dir "$WORK/s" --run-dir "$WORK/r" --host bench "$@"; }
now() { date +%s%N; }
t=$(now)
gv apply "$WORK/m" >/dev/null
echo "apply: created $N qcow2 file volumes in $(( ($(now) - t) / 1000000 )) ms"
gv plan "$WORK/m" --detailed-exitcode >/dev/null || { echo "the plan is not a no-op" >&2; exit 1; }
plans=(); infos=()
for round in $(seq 1 "$ROUNDS"); do
  t=$(now); gv plan "$WORK/m" --detailed-exitcode >/dev/null; plans+=($(( ($(now) - t) / 1000000 )))
  t=$(now); for f in "$WORK"/volumes/*.qcow2; do qemu-img info --output=json -U "$f" >/dev/null; done
  infos+=($(( ($(now) - t) / 1000000 )))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(median "${plans[@]}"); q=$(median "${infos[@]}")
echo "no-op plan over $N file volumes (one batch):  median ${p} ms  (rounds: ${plans[*]})"
echo "qemu-img info once per file ($N processes):    median ${q} ms  (rounds: ${infos[*]})"
echo "ratio (per-file qemu-img info / gitvisor plan): $(echo "scale=1; $q / $p" | bc)x"
