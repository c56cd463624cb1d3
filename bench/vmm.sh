#!/usr/bin/env bash
# Benchmark: gitvisor-vmm vs QEMU's microvm, booting the same tiny guest on this
# machine's KVM, side by side in one run (ratios measured in one run, not
# timed assertions).
#
#   bash bench/vmm.sh [RUNS]        (default 20 runs of each, interleaved)
#
# The guest is vmm/guests/serial_reset.c + start.S, built here with gcc into one ELF with
# two entry points: the 64-bit ELF entry that gitvisor-vmm enters through its 64-bit
# Linux boot path, and a PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) that QEMU's `-kernel` uses.
# Both paths print the same 22-byte marker on COM1 and then reset: gitvisor-vmm through
# the i8042; QEMU's microvm has no i8042, so through an isa-debug-exit device.
#
# Prints, as medians over RUNS (every run's value is kept in the JSON line at the end):
#   (a) process start -> first guest byte on the serial console (stdout pipe);
#   (b) process start -> process exited after the guest's reset;
#   the ratio QEMU/gitvisor-vmm for both; and
#   (c) memory: the VMM process's RSS minus the guest memory it has touched (RSS of the
#       guest RAM mapping), read from /proc/PID/smaps while the guest idles after the
#       marker (cmdline "idle").
#
# Commands (QEMU 7.2+): qemu-system-x86_64 -M microvm -accel kvm -m 64 -nodefaults
#   -no-user-config -nographic -no-reboot -serial stdio
#   -device isa-debug-exit,iobase=0xf4,iosize=1 -kernel guest.elf
# and: gitvisor-vmm --kernel guest.elf --memory 64 --serial-stdout
# QEMU's number includes its firmware (qboot) loading the PVH kernel: that is what
# booting a microvm costs with QEMU. Needs /dev/kvm, gcc, qemu-system-x86_64, python3.
# Set VMM_BIN to bench a given binary instead of building target/release/gitvisor-vmm.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}

for tool in gcc qemu-system-x86_64 python3; do
    command -v "$tool" >/dev/null || { echo "bench/vmm.sh: $tool is not installed" >&2; exit 1; }
done
[ -w /dev/kvm ] || { echo "bench/vmm.sh: /dev/kvm is not usable" >&2; exit 1; }

if [ -z "${VMM_BIN:-}" ]; then
    cargo build --release -q -p gitvisor-vmm
    VMM_BIN=target/release/gitvisor-vmm
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The same gcc flags as the VMM's own tests build their guests with (a response file).
gcc @vmm/guests/gcc.flags -Wl,-T,vmm/guests/guest.ld \
    vmm/guests/start.S vmm/guests/serial_reset.c -o "$tmp/guest.elf"

python3 - "$VMM_BIN" "$tmp/guest.elf" "$RUNS" <<'PY'
import json, os, statistics, subprocess, sys, time

vmm, guest, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
MEMORY_MIB = 64
MARKER = b"gitvisor-guest: hello\n"

def commands(idle):
    extra_q = ["-append", "idle"] if idle else []
    extra_g = ["--cmdline", "idle"] if idle else []
    return {
        "gitvisor-vmm": [vmm, "--kernel", guest, "--memory", str(MEMORY_MIB), "--serial-stdout"] + extra_g,
        "qemu-microvm": ["qemu-system-x86_64", "-M", "microvm", "-accel", "kvm", "-m", str(MEMORY_MIB),
                         "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
                         "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", guest] + extra_q,
    }

def boot(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - start
    rest = proc.stdout.read()
    proc.wait()
    t_exit = time.perf_counter() - start
    if (first + rest).find(MARKER) < 0:
        raise SystemExit(f"{cmd[0]} did not print the marker: {(first + rest)!r}")
    return t_first * 1000, t_exit * 1000

def memory(cmd):
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = b""
    while MARKER not in seen:
        chunk = proc.stdout.read1(64)
        if not chunk:
            raise SystemExit(f"{cmd[0]} ended before the marker")
        seen += chunk
    time.sleep(0.2)  # let the process settle after the guest's last output
    total = guest_rss = 0
    size = 0
    with open(f"/proc/{proc.pid}/smaps") as smaps:
        current = None
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                anonymous = len(fields) == 5
                # Guest RAM: the anonymous mapping of the guest's size (QEMU may add
                # a little alignment).
                current = anonymous and MEMORY_MIB << 20 <= end - start <= (MEMORY_MIB + 4) << 20
            elif fields[0] == "Rss:":
                kib = int(fields[1])
                total += kib
                if current:
                    guest_rss += kib
    proc.kill()
    proc.wait()
    return total, guest_rss

results = {name: [] for name in commands(False)}
for _ in range(runs):
    for name, cmd in commands(False).items():
        results[name].append(boot(cmd))

def median(values):
    return statistics.median(values)

g_first = median([r[0] for r in results["gitvisor-vmm"]])
g_exit = median([r[1] for r in results["gitvisor-vmm"]])
q_first = median([r[0] for r in results["qemu-microvm"]])
q_exit = median([r[1] for r in results["qemu-microvm"]])
print(f"runs: {runs} of each, interleaved; guest memory {MEMORY_MIB} MiB")
print(f"(a) start -> first serial byte:  gitvisor-vmm {g_first:7.1f} ms   qemu microvm {q_first:7.1f} ms   ratio {q_first / g_first:5.1f}x")
print(f"(b) start -> clean exit:         gitvisor-vmm {g_exit:7.1f} ms   qemu microvm {q_exit:7.1f} ms   ratio {q_exit / g_exit:5.1f}x")
mem = {name: memory(cmd) for name, cmd in commands(True).items()}
for name, (total, guest_rss) in mem.items():
    print(f"(c) {name:13} RSS {total / 1024:6.1f} MiB, guest memory touched {guest_rss / 1024:5.1f} MiB, VMM overhead {(total - guest_rss) / 1024:6.1f} MiB")
print(json.dumps({"runs_ms": results, "memory_kib": mem}))
PY
