#!/usr/bin/env bash
# The Volume driver's tests: lvm2 and the filesystem tools for the unit-level tools, and
# for the e2e scenarios (e2e/tests/volumes.rs) a virtme-ng guest booting Debian's kernel
# under QEMU TCG, since the CI host kernel has no device-mapper (docs/volumes.md). File
# volumes (e2e/tests/file_volumes.rs) need qemu-utils, and for their URL scenario
# python3 (the HTTPS server) and openssl (the test CA).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends \
    lvm2 thin-provisioning-tools e2fsprogs xfsprogs util-linux qemu-utils busybox-static \
    python3 openssl >/dev/null
# QEMU with its firmware (recommends included) and the kernel the guest boots; virtme-ng
# pinned to the version the e2e guests are tested with.
apt-get install -y -qq qemu-system-x86 linux-image-amd64 >/dev/null
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check virtme-ng==1.42
