#!/usr/bin/env bash
# Benchmark: starting a VM through `gitvisor apply` vs launching the same QEMU command
# line by hand, to the same serial marker, side by side in one run (a ratio
# measured in the same run, never a timed assertion in a test).
#
#   bash bench/vms.sh            # ROUNDS=3 by default, interleaved a b a b a b
#
# The guest is the e2e suite's: Debian's kernel with a busybox initramfs
# (`cargo run -p gitvisor-e2e --example guest-image`), under QEMU TCG, one virtio disk
# and one NIC on a bridge, printing GV-BOOT-OK on its serial console once its modules
# are loaded. Each round, in a fresh network namespace:
#   (a) gitvisor: `gitvisor apply` of the bridge and the VM (run dir, record, tap made and
#       marked through netlink, enslaved, QEMU launched detached), timed from the start of
#       `apply` until GV-BOOT-OK is in the serial log;
#   (b) by hand: `ip tuntap add` + `ip link set master/up` for a tap on the same bridge,
#       then the exact command line gitvisor launched (read from its run record, with the
#       run dir paths pointing elsewhere), timed the same way.
# Medians over the rounds, every round shown, and the ratio (a)/(b). Most of both is the
# guest booting under TCG; the difference is what gitvisor adds.
#
# Needs root. Everything happens in namespaces and temporary directories made here and
# removed on exit. GITVISOR_BIN picks the binary (default: target/debug/gitvisor, built).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
    echo "ROUNDS must be a positive integer" >&2
    exit 64
fi
if (( EUID != 0 )); then
    echo "bench/vms.sh needs root (network namespaces, taps)" >&2
    exit 77
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${GITVISOR_BIN:-} ]]; then
    BIN=$GITVISOR_BIN
else
    (cd "$ROOT" && cargo build -q -p gitvisor >&2)
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
    BIN=$TARGET/debug/gitvisor
fi
mapfile -t IMAGE < <(cd "$ROOT" && cargo run -q -p gitvisor-e2e --example guest-image)
KERNEL=${IMAGE[0]}
INITRD=${IMAGE[1]}

WORK=$(mktemp -d /tmp/gv-bench-vms.XXXXXX)
NAMESPACES=()
cleanup() {
    for pidfile in "$WORK"/*/run/vm/*/pid "$WORK"/*/hand/pid; do
        [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s%N; }
# Waits for GV-BOOT-OK in $1 (at most 600 s); prints nothing.
wait_marker() {
    local deadline=$(( $(date +%s) + 600 ))
    until grep -qa GV-BOOT-OK "$1" 2>/dev/null; do
        (( $(date +%s) < deadline )) || { echo "no GV-BOOT-OK in $1" >&2; exit 1; }
        sleep 0.01
    done
}

gitvisor_times=()
hand_times=()
apply_times=()
launch_times=()
for round in $(seq 1 "$ROUNDS"); do
    dir=$WORK/$round
    ns=gv-bench-vm-$$-$round
    mkdir -p "$dir/manifests" "$dir/hand"
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    truncate -s 16M "$dir/disk.img"
    cat > "$dir/manifests/vm.yaml" <<YAML
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: br-bench}
spec: {addresses: [10.232.0.1/24]}
---
apiVersion: gitvisor.dev/v1alpha1
kind: VirtualMachine
metadata: {name: bench}
spec:
  memory: 256MiB
  accel: tcg
  boot: {kernel: $KERNEL, initrd: $INITRD, cmdline: console=ttyS0 quiet}
  disks: [{path: $dir/disk.img}]
  networks: [{bridge: br-bench}]
YAML
    # (a) gitvisor
    start=$(now)
    ip netns exec "$ns" "$BIN" --state-dir "$dir/state" --run-dir "$dir/run" --host bench \
        apply "$dir/manifests" >/dev/null
    applied=$(( ($(now) - start) / 1000000 ))
    wait_marker "$dir/run/vm/bench/serial.log"
    gitvisor_times+=($(( ($(now) - start) / 1000000 )))
    kill -9 "$(cat "$dir/run/vm/bench/pid")"

    # (b) by hand: the same command line, its own run dir, a tap made with ip.
    mapfile -t argv < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["argv"]))' \
        "$dir/run/vm/bench/gitvisor.json")
    tap=$(printf '%s\n' "${argv[@]}" | sed -n 's/.*ifname=\([^,]*\).*/\1/p' | head -1)
    ip -n "$ns" link del "$tap"
    argv=("${argv[@]//$dir\/run\/vm\/bench/$dir/hand}")
    start=$(now)
    ip -n "$ns" tuntap add dev "$tap" mode tap
    ip -n "$ns" link set "$tap" master br-bench up
    ip netns exec "$ns" "${argv[@]}"
    launched=$(( ($(now) - start) / 1000000 ))
    wait_marker "$dir/hand/serial.log"
    hand_times+=($(( ($(now) - start) / 1000000 )))
    kill -9 "$(cat "$dir/hand/pid")"
    apply_times+=("$applied")
    launch_times+=("$launched")
    echo "round $round: gitvisor ${gitvisor_times[-1]} ms (apply returned after ${applied} ms), by hand ${hand_times[-1]} ms (QEMU detached after ${launched} ms)" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
g=$(median "${gitvisor_times[@]}")
h=$(median "${hand_times[@]}")
echo "VM start to GV-BOOT-OK, median of $ROUNDS rounds (QEMU TCG, Debian kernel + busybox initramfs):"
echo "  (a) gitvisor apply:          ${g} ms   [${gitvisor_times[*]}]"
echo "  (b) same QEMU line by hand:  ${h} ms   [${hand_times[*]}]"
awk -v g="$g" -v h="$h" 'BEGIN { printf "  ratio (a)/(b): %.2f   gitvisor adds %d ms\n", g / h, g - h }'
a=$(median "${apply_times[@]}")
l=$(median "${launch_times[@]}")
echo "Until the guest runs detached (the part gitvisor controls; the rest is the guest booting):"
echo "  (a) gitvisor apply returned: ${a} ms   [${apply_times[*]}]"
echo "  (b) ip tuntap + QEMU detach: ${l} ms   [${launch_times[*]}]"
