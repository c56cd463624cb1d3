#!/usr/bin/env bash
# Benchmark: a stock Linux kernel booted to /init and powered off, on gitvisor-vmm, on
# QEMU's microvm and on QEMU's q35, side by side in one run (ratios measured in one run,
# not timed assertions).
#
#   bash bench/vmm-linux.sh [RUNS]        (default 7 runs of each, interleaved)
#
# This machine's /dev/kvm hangs stock kernels (docs/vmm.md, "Tests"), so the three run one level
# down: inside ONE virtme-ng guest (`vng --disable-kvm -o '-cpu max'`, QEMU TCG with an
# emulated AMD CPU that has svm and npt) where Debian's kernel loads kvm_amd and has a
# working nested /dev/kvm. Times are double emulation: compare the ratios of one run, not
# the seconds across machines.
#
# The guest is Debian's /boot/vmlinuz-* (the newest) with an initramfs made here: a static
# busybox and an /init that prints `GV-INIT uptime=<the guest's /proc/uptime>` on the
# serial console, then `poweroff -f` (ACPI S5). No disk, no NIC: the boot itself is timed.
#
# Per run and VMM, from process start: (a) the first line from /init on the serial
# console (the VMM's stdout), (b) the process's exit after the guest powered off; and
# (c) the guest's own uptime at /init. Every run is printed, then medians and the ratios
# QEMU/gitvisor-vmm.
#
# Commands (all with `-m 256`/`--memory 256`, 1 vCPU, KVM):
#   gitvisor-vmm --kernel K --initrd I --memory 256 --serial-stdout
#       --cmdline "<gitvisor's base command line> quiet"      (what gitvisor gives a guest)
#   qemu-system-x86_64 -M microvm,acpi=on,x-option-roms=off,rtc=off,pit=off,pic=off
#       -accel kvm -cpu host -nodefaults -no-user-config -nographic -no-reboot
#       -serial stdio -kernel K -initrd I -append "<the same line>"
#   qemu-system-x86_64 -M q35 -accel kvm -cpu host -nodefaults -no-user-config
#       -nographic -no-reboot -serial stdio -kernel K -initrd I
#       -append "console=ttyS0 panic=-1 quiet"
#   vmm-cached: gitvisor-vmm as above with `--kernel-cache DIR` (the VMM decompresses the
#       bzImage once, filled by one boot before the runs, and boots the ELF)
#   microvm-elf: the microvm line with that same ELF as -kernel (PVH entry), its fair partner
# Needs vng (virtme-ng), qemu-system-x86_64, busybox (static), cpio, python3.
# Set VMM_BIN to bench a given binary instead of building target/release/gitvisor-vmm.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}

for tool in vng qemu-system-x86_64 busybox cpio python3; do
    command -v "$tool" >/dev/null || { echo "bench/vmm-linux.sh: $tool is not installed" >&2; exit 1; }
done
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "bench/vmm-linux.sh: no /boot/vmlinuz-* (apt install linux-image-amd64)" >&2; exit 1; }

if [ -z "${VMM_BIN:-}" ]; then
    cargo build --release -q -p gitvisor-vmm
    VMM_BIN=target/release/gitvisor-vmm
fi
VMM_BIN=$(realpath "$VMM_BIN")
# gitvisor's base command line for builtin guests (reconciler/src/drivers/vm/spec.rs).
base=$(sed -n 's/^.*"\(console=ttyS0 reboot=k[^"]*\)";$/\1/p' reconciler/src/drivers/vm/spec.rs)
[ -n "$base" ] || { echo "bench/vmm-linux.sh: cannot read BUILTIN_BASE_CMDLINE" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/proc" "$tmp/root/dev"
cp "$(command -v busybox)" "$tmp/root/bin/busybox"
cat >"$tmp/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read up rest </proc/uptime
echo "GV-INIT uptime=$up"
/bin/busybox poweroff -f
INIT
chmod 755 "$tmp/root/init" "$tmp/root/bin/busybox"
(cd "$tmp/root" && find . | cpio -o -H newc --quiet >"$tmp/initramfs.cpio")

cat >"$tmp/bench.py" <<'PY'
import json, os, re, statistics, subprocess, sys, time

vmm, kernel, initrd, base, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
quiet = base + " quiet"
qemu = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
        "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
        "-kernel", kernel, "-initrd", initrd]
cache = os.path.join(os.path.dirname(initrd), "kernel-cache")
vmm_args = ["--initrd", initrd, "--memory", "256", "--serial-stdout", "--cmdline", quiet]
microvm = ["-M", "microvm,acpi=on,x-option-roms=off,rtc=off,pit=off,pic=off", "-append", quiet]
commands = {
    "gitvisor-vmm": [vmm, "--kernel", kernel] + vmm_args,
    # The VMM decompresses the bzImage once into the cache and boots the ELF (Firecracker
    # boots an uncompressed vmlinux too); filled by one boot before the runs.
    "vmm-cached": [vmm, "--kernel", kernel, "--kernel-cache", cache] + vmm_args,
    "qemu-microvm": qemu + microvm,
    # The fair partner of vmm-cached: microvm given the same uncompressed ELF (PVH entry).
    "microvm-elf": None,
    "qemu-q35": qemu + ["-M", "q35", "-append", "console=ttyS0 panic=-1 quiet"],
}

def boot(name, cmd):
    start = time.perf_counter()
    # A boot that hangs ends after 120 s (exit 124) instead of stalling the benchmark.
    proc = subprocess.Popen(["timeout", "-k", "5", "120"] + cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    at_init = uptime = None
    seen = []
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        seen.append(line)
        found = re.search(r"GV-INIT uptime=([0-9.]+)", line)
        if found and at_init is None:
            at_init = time.perf_counter() - start
            uptime = float(found.group(1))
    code = proc.wait()
    total = time.perf_counter() - start
    if at_init is None:
        tail = "".join(seen[-30:])
        raise SystemExit(f"{name} never reached /init (exit {code}):\n{tail}")
    return {"init_s": round(at_init, 3), "exit_s": round(total, 3), "uptime_s": uptime, "code": code}

fill = boot("vmm-cached", commands["vmm-cached"])
elf = [os.path.join(cache, f) for f in sorted(os.listdir(cache)) if f.startswith("vmlinux-")]
if not elf:
    raise SystemExit(f"--kernel-cache left no vmlinux-* in {cache}")
print(f"kernel cache filled by one boot: /init at {fill['init_s']:.2f} s; ELF {elf[0]}", flush=True)
commands["microvm-elf"] = [a if a != kernel else elf[0] for a in qemu] + microvm
results = {name: [] for name in commands}
for run in range(1, runs + 1):
    for name, cmd in commands.items():
        r = boot(name, cmd)
        results[name].append(r)
        print(f"run {run} {name:13} /init at {r['init_s']:6.2f} s (guest uptime {r['uptime_s']:5.2f} s), "
              f"powered off at {r['exit_s']:6.2f} s, exit {r['code']}", flush=True)

med = {name: {key: statistics.median(r[key] for r in rs) for key in ("init_s", "exit_s", "uptime_s")}
       for name, rs in results.items()}
print(f"\nmedians over {runs} interleaved runs (1 vCPU, 256 MiB, nested KVM in a TCG guest):")
print(f"{'':14} {'start->/init':>13} {'start->off':>11} {'uptime@/init':>13}")
for name, m in med.items():
    print(f"{name:14} {m['init_s']:11.2f} s {m['exit_s']:9.2f} s {m['uptime_s']:11.2f} s")
for mine, others in (("gitvisor-vmm", ("qemu-microvm", "qemu-q35")),
                     ("vmm-cached", ("qemu-microvm", "microvm-elf", "qemu-q35"))):
    g = med[mine]
    for other in others:
        o = med[other]
        print(f"ratio {other}/{mine}: to /init {o['init_s'] / g['init_s']:.2f}x, "
              f"to power-off {o['exit_s'] / g['exit_s']:.2f}x, guest uptime {o['uptime_s'] / g['uptime_s']:.2f}x")
print(json.dumps({"runs": results, "medians": med}))
PY

cat >"$tmp/inner.sh" <<INNER
set -e
modprobe kvm_amd
[ -w /dev/kvm ] || { echo "no usable /dev/kvm in the -cpu max guest"; exit 1; }
grep -m1 'model name' /proc/cpuinfo
python3 "$tmp/bench.py" "$VMM_BIN" "$kernel" "$tmp/initramfs.cpio" "$base" "$RUNS"
INNER

echo "kernel $kernel; one vng -cpu max guest (TCG, 1 vCPU, 2 GiB); $RUNS runs of each, interleaved"
started=$(date +%s)
vng --disable-kvm --cpus 1 --memory 2G -o='-cpu max' --rwdir "$tmp" \
    --run "$kernel" -- bash "$tmp/inner.sh" 2>&1 | tee "$tmp/out.log"
grep -q '^{"runs"' "$tmp/out.log" || { echo "bench/vmm-linux.sh: the guest did not finish" >&2; exit 1; }
echo "vng guest, boot to power-off: $(( $(date +%s) - started )) s"
