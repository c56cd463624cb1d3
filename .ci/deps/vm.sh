#!/usr/bin/env bash
# VirtualMachine driver tests: QEMU (TCG), Debian's kernel for the guest, a static busybox
# for its initramfs, OVMF for the UEFI scenario.
set -euo pipefail
apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 linux-image-amd64 busybox-static ovmf >/dev/null
