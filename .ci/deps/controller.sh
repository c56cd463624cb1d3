#!/usr/bin/env bash
# Test dependencies of the controller (`gitvisor run`): git (git sources, git daemon),
# openssh-client (ssh-keygen: signed commits), systemd-analyze (the unit file),
# promtool (the metrics exposition), nix-instantiate (flake.nix parses), util-linux's
# setpriv (a non-root API client; the unit's capability bounding set), python3 with
# libseccomp2 (the unit's system-call filters, e2e/scripts/systemd-seccomp.py).
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v setpriv >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
ldconfig -p | grep -q 'libseccomp\.so\.2 ' || need+=(libseccomp2)
if ((${#need[@]})); then
    # Packages with a service (prometheus) must not start it on the CI machine.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
