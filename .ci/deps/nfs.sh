#!/usr/bin/env bash
# The NfsMount kind's tests (e2e/tests/nfs.rs): the NFS client tools (mount.nfs) and the
# kernel NFS server's tools (rpc.nfsd, rpc.mountd, exportfs). The host kernel here has
# neither the NFS client nor nfsd, so the suite runs them in a virtme-ng guest booting
# Debian's kernel (QEMU, the kernel and virtme-ng come from volume.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# No NFS service is started on the CI host: the guest suite runs rpc.nfsd itself, in a
# namespace. A policy-rc.d of our own keeps the package scripts from starting one, unless
# the machine already has a policy.
ours=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    ours=1
fi
status=0
apt-get install -y -qq --no-install-recommends nfs-common nfs-kernel-server >/dev/null || status=$?
[ "$ours" = 0 ] || rm -f /usr/sbin/policy-rc.d
exit "$status"
