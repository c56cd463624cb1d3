#!/usr/bin/env bash
# Benchmark: starting a container through `gitvisor apply` vs `runc run -d` of the same
# bundle by hand, side by side in one run (ratios measured in the same run,
# never timed assertions in tests).
#
#   bash bench/containers.sh [N]
#
# Each round (ROUNDS, default 5, interleaved so load from other processes shows up as an
# outlier instead of skewing one side):
#   (a) `gitvisor apply` of one busybox container (a plain root file system image,
#       `sleep`, no network), from nothing to running; the whole command: process start,
#       manifest load, state store, one `runc list`, overlay mount, config.json, the
#       container's supervisor, `runc create`, loopback, `runc start`, verify, record;
#   (b) `runc run -d` of the bundle gitvisor generated for it (its config.json, the
#       same root file system), with its own runtime root;
#   (c) `gitvisor apply` of N containers at once (default 10), per container;
#   (d) N `runc run -d` one after another, per container;
#   (e) `gitvisor apply --concurrency 1` of N containers, per container: one at a time,
#       like (d), so the difference is gitvisor's own work per container.
# It prints medians and gitvisor's overhead per container beyond the runtime's:
# (a) - (b) for one (the whole command), (e) - (d) per container, one at a time, and
# (c) - (d) per container with apply's default parallelism.
#
# Needs root, runc and busybox (Debian: busybox-static). gitvisor runs in a network
# namespace made here (`nsenter --net`, keeping the host's cgroup mounts); every
# container, mount, namespace and directory made here is removed on exit (trap). Set
# GITVISOR_BIN to bench a given binary instead of building target/release/gitvisor.
set -euo pipefail

N=${1:-10}
ROUNDS=${ROUNDS:-5}
if ! [[ $N =~ ^[0-9]+$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] || (( N < 1 || N > 200 )); then
    echo "usage: bash bench/containers.sh [N]   (1 <= N <= 200; env ROUNDS, GITVISOR_BIN)" >&2
    exit 64
fi
if (( EUID != 0 )); then
    echo "bench/containers.sh needs root (containers, namespaces)" >&2
    exit 77
fi
for tool in runc busybox nsenter; do
    command -v $tool >/dev/null || { echo "bench/containers.sh needs $tool" >&2; exit 77; }
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
gitvisor_binary

WORK=$(mktemp -d /tmp/gv-bench-containers-XXXXXX)
NS=gv-bench-ctr-$$
cleanup() {
    for root in "$WORK"/run*/runc "$WORK"/byhand; do
        [[ -d $root ]] || continue
        for id in $(runc --root "$root" list -q 2>/dev/null); do
            runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r point; do
        umount -l "$point" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"

# The image: busybox-static as a plain root file system.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,proc,sys,dev,tmp,etc}
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in sh sleep; do ln -s busybox "$ROOTFS/bin/$applet"; done

manifest() { # name
    cat <<EOF
apiVersion: gitvisor.dev/v1alpha1
kind: Container
metadata:
  name: $1
spec:
  image: $ROOTFS
  command: [sleep, "100000"]
EOF
}
now() { date +%s%N; }
gv() { # run-dir state-dir args…
    local run=$1 state=$2; shift 2
    nsenter --net=/run/netns/"$NS" "$BIN" --run-dir "$run" --state-dir "$state" --host bench "$@"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk -v ns="$1" 'BEGIN {printf "%.1f", ns/1e6}'; }

# A bundle for the by-hand runs: gitvisor's own config.json for the container, with the
# root file system directory as its root (runc run needs no overlay for a directory) and
# runc's default cgroup (named by the container id), so each run has its own.
mkdir -p "$WORK/m0" && manifest probe > "$WORK/m0/probe.yaml"
gv "$WORK/run-probe" "$WORK/state-probe" apply "$WORK/m0" >/dev/null
BUNDLE=$WORK/bundle
mkdir -p "$BUNDLE"
python3 - "$WORK/run-probe/containers/probe/config.json" "$BUNDLE/config.json" "$ROOTFS" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
config["root"]["path"] = sys.argv[3]
config["linux"].pop("cgroupsPath", None)
json.dump(config, open(sys.argv[2], "w"))
EOF
runc --root "$WORK/run-probe/runc" delete --force probe >/dev/null

declare -a A B C D E
for round in $(seq 1 "$ROUNDS"); do
    # (a) one container through gitvisor.
    m=$WORK/ma$round; mkdir -p "$m"; manifest one > "$m/one.yaml"
    t0=$(now); gv "$WORK/runa$round" "$WORK/statea$round" apply "$m" >/dev/null; t1=$(now)
    A+=($((t1 - t0)))
    runc --root "$WORK/runa$round/runc" delete --force one >/dev/null

    # (b) the same bundle by hand.
    t0=$(now); runc --root "$WORK/byhand" run -d --bundle "$BUNDLE" "b$round" </dev/null >/dev/null 2>&1; t1=$(now)
    B+=($((t1 - t0)))
    runc --root "$WORK/byhand" delete --force "b$round" >/dev/null

    # (c) N containers through gitvisor, one apply.
    m=$WORK/mc$round; mkdir -p "$m"
    for i in $(seq 1 "$N"); do manifest "c$i" > "$m/c$i.yaml"; done
    t0=$(now); gv "$WORK/runc$round" "$WORK/statec$round" apply "$m" >/dev/null; t1=$(now)
    C+=($(((t1 - t0) / N)))
    for i in $(seq 1 "$N"); do runc --root "$WORK/runc$round/runc" delete --force "c$i" >/dev/null; done

    # (d) N by hand.
    t0=$(now)
    for i in $(seq 1 "$N"); do
        runc --root "$WORK/byhand" run -d --bundle "$BUNDLE" "d$round-$i" </dev/null >/dev/null 2>&1
    done
    t1=$(now)
    D+=($(((t1 - t0) / N)))
    for i in $(seq 1 "$N"); do runc --root "$WORK/byhand" delete --force "d$round-$i" >/dev/null; done

    # (e) N containers through gitvisor, one at a time.
    m=$WORK/me$round; mkdir -p "$m"
    for i in $(seq 1 "$N"); do manifest "e$i" > "$m/e$i.yaml"; done
    t0=$(now); gv "$WORK/rune$round" "$WORK/statee$round" apply --concurrency 1 "$m" >/dev/null; t1=$(now)
    E+=($(((t1 - t0) / N)))
    for i in $(seq 1 "$N"); do runc --root "$WORK/rune$round/runc" delete --force "e$i" >/dev/null; done
    printf 'round %d: (a) %s ms, (b) %s ms, (c) %s, (d) %s, (e) %s ms/container\n' \
        "$round" "$(ms "${A[-1]}")" "$(ms "${B[-1]}")" "$(ms "${C[-1]}")" "$(ms "${D[-1]}")" "$(ms "${E[-1]}")"
done

a=$(printf '%s\n' "${A[@]}" | median); b=$(printf '%s\n' "${B[@]}" | median)
c=$(printf '%s\n' "${C[@]}" | median); d=$(printf '%s\n' "${D[@]}" | median)
e=$(printf '%s\n' "${E[@]}" | median)
echo
echo "medians over $ROUNDS rounds ($(basename "$BIN") at $BIN):"
printf '  (a) gitvisor apply, 1 container          %8s ms\n' "$(ms "$a")"
printf '  (b) runc run -d, same bundle             %8s ms\n' "$(ms "$b")"
printf '  (c) gitvisor apply, %3d containers        %8s ms per container\n' "$N" "$(ms "$c")"
printf '  (d) runc run -d x %3d, one at a time      %8s ms per container\n' "$N" "$(ms "$d")"
printf '  (e) gitvisor apply --concurrency 1, %3d   %8s ms per container\n' "$N" "$(ms "$e")"
printf '  gitvisor overhead beyond runc per container: %s ms one at a time (e-d), %s ms with parallel apply (c-d)\n' \
    "$(ms $((e - d)))" "$(ms $((c - d)))"
printf '  one container, whole command: %s ms beyond runc run -d (a-b, ratio %s)\n' \
    "$(ms $((a - b)))" "$(awk -v x="$a" -v y="$b" 'BEGIN {printf "%.2f", x/y}')"
