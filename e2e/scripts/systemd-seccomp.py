#!/usr/bin/env python3
"""Installs the seccomp filter systemd would install for a unit's settings, then execs a
command under it: the e2e harness's stand-in for systemd as PID 1 (e2e/src/unit.rs).

    E2E_SYSTEMD_SECCOMP=CONFIG_JSON systemd-seccomp.py -- COMMAND ARGS...

CONFIG_JSON (written by e2e/src/unit.rs from the unit; the variable is removed before the
exec):
  allow        system calls allowed (SystemCallFilter=, its groups expanded by
               `systemd-analyze syscall-filter`); every other one fails with `errno`
  errno        SystemCallErrorNumber= (a number)
  families     RestrictAddressFamilies= as numbers, or null: socket(2) with another
               family fails with EAFNOSUPPORT, as under systemd
  deny_ns      CLONE_NEW* flags RestrictNamespaces= forbids (0: none): clone, unshare
               and setns with one of them fail; clone3 fails with ENOSYS (systemd's way
               to send callers back to clone, whose flags it can see)
  realtime     RestrictRealtime=yes: sched_setscheduler to SCHED_FIFO, SCHED_RR or
               SCHED_DEADLINE fails
  personality  LockPersonality=yes: personality(2) may only query or keep PER_LINUX
Only the native architecture is in the filter (SystemCallArchitectures=native); libseccomp
kills a call from another one.

libseccomp comes with runc (libseccomp2); it is used through ctypes, so nothing is built.
"""

import ctypes
import errno
import json
import os
import sys

ALLOW = 0x7FFF0000


def errno_action(number):
    return 0x00050000 | (number & 0xFFFF)


class Cmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("a", ctypes.c_uint64),
        ("b", ctypes.c_uint64),
    ]


EQ, MASKED_EQ, GE = 4, 7, 5


def main():
    if len(sys.argv) < 3 or sys.argv[1] != "--":
        sys.exit("usage: E2E_SYSTEMD_SECCOMP=CONFIG_JSON systemd-seccomp.py -- COMMAND ARGS...")
    config = json.loads(os.environ.pop("E2E_SYSTEMD_SECCOMP"))
    command = sys.argv[2:]
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(Cmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(errno_action(config["errno"]))
    if not ctx:
        sys.exit("systemd-seccomp.py: seccomp_init failed")

    def rule(action, name, *cmps):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call of this architecture
        array = (Cmp * len(cmps))(*cmps) if cmps else None
        rc = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
        if rc < 0:
            sys.exit(f"systemd-seccomp.py: rule for {name}: {os.strerror(-rc)}")

    conditional = set()
    allowed = set(config["allow"])
    families = config.get("families")
    if families is not None and "socket" in allowed:
        conditional.add("socket")
        for family in range(0, 64):
            action = ALLOW if family in families else errno_action(errno.EAFNOSUPPORT)
            rule(action, "socket", Cmp(0, EQ, family, 0))
        rule(errno_action(errno.EAFNOSUPPORT), "socket", Cmp(0, GE, 64, 0))
    deny_ns = config.get("deny_ns", 0)
    if deny_ns:
        conditional.update({"clone", "unshare", "setns", "clone3"})
        for name, arg in (("clone", 0), ("unshare", 0), ("setns", 1)):
            if name in allowed:
                rule(ALLOW, name, Cmp(arg, MASKED_EQ, deny_ns, 0))
        rule(errno_action(errno.ENOSYS), "clone3")
    if config.get("realtime") and "sched_setscheduler" in allowed:
        conditional.add("sched_setscheduler")
        reset_on_fork = 0x40000000
        for policy in (0, 3, 5):  # SCHED_OTHER, SCHED_BATCH, SCHED_IDLE
            for flags in (0, reset_on_fork):
                rule(ALLOW, "sched_setscheduler", Cmp(1, EQ, policy | flags, 0))
    if config.get("personality") and "personality" in allowed:
        conditional.add("personality")
        for persona in (0, 0xFFFFFFFF):  # PER_LINUX, and a query
            rule(ALLOW, "personality", Cmp(0, EQ, persona, 0))
    for name in config["allow"]:
        if name not in conditional:
            rule(ALLOW, name)
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        sys.exit(f"systemd-seccomp.py: seccomp_load: {os.strerror(-rc)}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
