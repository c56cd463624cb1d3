#!/usr/bin/env bash
# The VLAN e2e scenarios (e2e/tests/vlans.rs, docs/network.md#vlans): `ip`, `bridge` and
# `ping` in the guest. The guest itself (virtme-ng, QEMU, Debian's kernel with the bridge
# and 8021q modules) comes from volume.sh.
set -euo pipefail
apt-get install -y -qq --no-install-recommends iproute2 iputils-ping >/dev/null
