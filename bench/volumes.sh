#!/usr/bin/env bash
# Volume driver benchmark, inside one virtme-ng guest (the host kernel has no
# device-mapper; see docs/volumes.md): a no-op `gitvisor plan` over N managed logical
# volumes (one `vgs` + one `lvs` for all of them) against the obvious shell loop that runs
# `lvs` once per volume, side by side in the same guest, interleaved rounds, medians and
# the ratio. Needs root, vng (pip install virtme-ng), qemu-system-x86, lvm2,
# linux-image-amd64 and a built gitvisor (cargo build -p gitvisor; GITVISOR_BIN picks another build).
#
#   bench/volumes.sh [N=200] [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
ROUNDS=${2:-5}
BIN=${GITVISOR_BIN:-$PWD/target/debug/gitvisor}
[ -x "$BIN" ] || { echo "build gitvisor first (cargo build -p gitvisor), or set GITVISOR_BIN" >&2; exit 1; }
KERNEL=$(ls /boot/vmlinuz-* | sort | tail -1)
SHARED=$(mktemp -d /tmp/gv-bench-volumes.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$SHARED"' EXIT

cat > "$SHARED/guest.sh" <<GUEST
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
modprobe loop; modprobe dm-mod; modprobe dm-thin-pool
truncate -s 4G /run/pv.img
vgcreate -q -s 4m gvbench "\$(losetup -f --show /run/pv.img)" >/dev/null
lvcreate -q --yes --type thin-pool -n pool -L 1g gvbench >/dev/null
mkdir -p /run/m /run/s /run/r
for i in \$(seq 1 $N); do
  printf 'apiVersion: gitvisor.dev/v1alpha1\nkind: Volume\nmetadata:\n  name: v%s\nspec:\n  volumeGroup: gvbench\n  thinPool: pool\n  size: 4MiB\n---\n' \$i
done > /run/m/volumes.yaml
# 9p without a cache: run a copy from the guest's memory, not the host's file.
cp "$BIN" /run/gitvisor
gv() { /run/gitvisor --state-dir /run/s --run-dir /run/r --host bench "\$@"; }
start=\$(date +%s.%N)
gv apply /run/m --concurrency 8 >/dev/null
echo "apply: created $N thin volumes in \$(echo "\$(date +%s.%N) - \$start" | bc)s"
gv plan /run/m --detailed-exitcode >/dev/null || { echo "the plan is not a no-op" >&2; exit 1; }
now() { date +%s%N; }
plans=(); loops=()
for round in \$(seq 1 $ROUNDS); do
  t=\$(now); gv plan /run/m --detailed-exitcode >/dev/null; plans+=(\$(( (\$(now) - t) / 1000000 )))
  t=\$(now); for i in \$(seq 1 $N); do lvs --reportformat json --units b -o lv_name,lv_size,lv_tags gvbench/v\$i >/dev/null; done
  loops+=(\$(( (\$(now) - t) / 1000000 )))
done
median() { printf '%s\n' "\$@" | sort -n | awk '{a[NR]=\$1} END {print a[int((NR+1)/2)]}'; }
p=\$(median "\${plans[@]}"); l=\$(median "\${loops[@]}")
echo "no-op plan over $N volumes (one vgs + one lvs): median \${p} ms  (rounds: \${plans[*]})"
echo "lvs once per volume ($N calls):                 median \${l} ms  (rounds: \${loops[*]})"
echo "ratio (per-volume lvs / gitvisor plan): \$(echo "scale=1; \$l / \$p" | bc)x"
GUEST

vng --disable-kvm --memory 3G --rwdir "$SHARED" --run "$KERNEL" -- "bash $SHARED/guest.sh > $SHARED/out.txt 2>&1; sync" > "$SHARED/vng.log" 2>&1 || { echo "vng failed:" >&2; tail -20 "$SHARED/vng.log" >&2; }
cat "$SHARED/out.txt"
