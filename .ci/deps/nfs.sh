#!/usr/bin/env bash
# The NfsMount kind's tests (e2e/tests/nfs.rs): the NFS client tools (mount.nfs) and the
# kernel NFS server's tools (rpc.nfsd, exportfs). The host kernel here has neither the NFS
# client nor nfsd, so the suite runs them in a virtme-ng guest booting Debian's kernel
# (QEMU, the kernel and virtme-ng come from vm.sh / volume.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# No service is started here: the guest suite runs rpc.nfsd itself, in a namespace.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.gitvisor-nfs
had_policy=0
[ -e /usr/sbin/policy-rc.d ] && had_policy=1
[ "$had_policy" = 1 ] || cp /usr/sbin/policy-rc.d.gitvisor-nfs /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends nfs-common nfs-kernel-server >/dev/null
[ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
rm -f /usr/sbin/policy-rc.d.gitvisor-nfs
