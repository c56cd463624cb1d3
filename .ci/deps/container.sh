#!/usr/bin/env bash
# Container driver tests: runc runs the containers (crun refuses hybrid cgroups),
# busybox-static is the test image's content, umoci and skopeo build real OCI layouts
# and docker-archives from it and push to docker-registry (the CNCF distribution
# registry), nsenter (util-linux) runs gitvisor in a test namespace with the host's
# cgroup mounts, ping is used from the host side in manual checks, python3 serves a
# registry that stalls mid-download (e2e/tests/images.rs).
set -euo pipefail
apt-get install -y -qq --no-install-recommends \
    runc busybox-static umoci skopeo docker-registry util-linux iputils-ping python3 >/dev/null
