#!/usr/bin/env bash
# Test dependencies of the builtin VMM (vmm/): gcc and binutils build the test guests
# (vmm/guests/*.c, start.S) at test time; acpica-tools gives iasl, whose disassembler
# checks the generated ACPI tables (vmm/tests/acpi.rs). The tests also need /dev/kvm;
# without it (or iasl) they print SKIPPED. qemu-system-x86 is only for bench/vmm.sh, not
# installed here.
set -euo pipefail
apt-get install -y -qq --no-install-recommends gcc binutils acpica-tools >/dev/null
