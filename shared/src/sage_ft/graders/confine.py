"""Confinement a python grader's process puts on itself before the grader's code runs: Landlock and seccomp.

Both are unprivileged kernel features: a process may restrict itself (after ``no_new_privs``) and can never lift
the restriction, nor can anything it runs. That makes them usable where namespaces are not: inside a Docker
container or a Kubernetes pod, which may not create namespaces (so bubblewrap cannot run) but whose runtime's
default seccomp profile lets a process add filters of its own.

- **Landlock** (Linux 5.13+): files can be read only under the Python runtime and ``/usr``, and written only in the
  call's own directory; ``/proc``, ``/etc``, the home directory and every other file (a service's code and config, a
  mounted secret, a service-account token) are refused. From ABI 4 TCP connect and bind are refused; from ABI 6
  signals to, and abstract sockets of, processes outside the sandbox. Landlock also refuses ``ptrace`` access to
  processes outside the sandbox, which is what reading another process's ``/proc/<pid>/environ`` needs.
- **seccomp**: a BPF filter that refuses ``socket`` (no connection of any kind, not even to a local port), new
  processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``: a fork bomb ends at once with ``EAGAIN``, as
  at a process limit; threads still work), ``execve``, ``ptrace``, other processes' memory, signals to other
  processes, namespaces and mounts, keyrings, ``bpf``, ``perf_event_open``, ``userfaultfd`` and ``io_uring``.
  Syscalls of another ABI (i386 or x32 on x86-64) kill the process, so the filter cannot be stepped around.

This file runs inside the sandbox with ``python -I -S``, where sage-ft is not importable: the sandbox sends its
source text ahead of the harness. So it imports only the standard library.
"""

import ctypes
import os
import platform
import struct
from typing import Any

# -- seccomp ---------------------------------------------------------------------------------------------------

EPERM, EAGAIN, EACCES, ENOSYS = 1, 11, 13, 38
CLONE_THREAD = 0x00010000
ALLOW, KILL = 0x7FFF0000, 0x80000000
# Syscall numbers, as "name number" pairs, per machine
X86_64 = (
    "socket 41 socketpair 53 clone 56 fork 57 vfork 58 execve 59 kill 62 ptrace 101 pivot_root 155 chroot 161 "
    "mount 165 umount2 166 tkill 200 tgkill 234 add_key 248 request_key 249 keyctl 250 unshare 272 "
    "perf_event_open 298 setns 308 process_vm_readv 310 process_vm_writev 311 bpf 321 execveat 322 userfaultfd 323 "
    "pidfd_send_signal 424 io_uring_setup 425 io_uring_enter 426 io_uring_register 427 pidfd_open 434 clone3 435 "
    "pidfd_getfd 438"
)
AARCH64 = (
    "umount2 39 mount 40 pivot_root 41 chroot 51 unshare 97 ptrace 117 kill 129 tkill 130 tgkill 131 socket 198 "
    "socketpair 199 add_key 217 request_key 218 keyctl 219 clone 220 execve 221 perf_event_open 241 setns 268 "
    "process_vm_readv 270 process_vm_writev 271 bpf 280 execveat 281 userfaultfd 282 pidfd_send_signal 424 "
    "io_uring_setup 425 io_uring_enter 426 io_uring_register 427 pidfd_open 434 clone3 435 pidfd_getfd 438"
)


def _numbers(table: str) -> dict[str, int]:
    words = table.split()
    return {name: int(nr) for name, nr in zip(words[::2], words[1::2], strict=True)}


# machine: (its audit arch, the first number of a foreign ABI on it or None, its syscall numbers)
ABIS = {"x86_64": (0xC000003E, 0x40000000, _numbers(X86_64)), "aarch64": (0xC00000B7, None, _numbers(AARCH64))}
REFUSED = {"socket": EACCES, "socketpair": EACCES, "fork": EAGAIN, "vfork": EAGAIN, "clone3": ENOSYS}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _errno(n: int) -> int:
    return 0x00050000 | n


def seccomp_program(machine: str, pid: int) -> bytes:
    """The BPF filter (see the module's docstring); ``pid`` is the process's own, the only one it may signal."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    arch, foreign, numbers = ABIS[machine]
    prog = [_op(ld, 4), _op(jeq, arch, 1, 0), _op(ret, KILL), _op(ld, 0)]
    if foreign is not None:
        prog += [_op(jge, foreign, 0, 1), _op(ret, KILL)]
    for name, nr in sorted(numbers.items(), key=lambda kv: kv[1]):
        if name == "clone":  # threads only: a new process is refused as at a process limit
            block = [_op(ld, 16), _op(jset, CLONE_THREAD, 0, 1), _op(ret, ALLOW), _op(ret, _errno(EAGAIN))]
        elif name in ("kill", "tgkill"):  # itself only
            block = [_op(ld, 16), _op(jeq, pid, 0, 1), _op(ret, ALLOW), _op(ret, _errno(EPERM))]
        else:
            block = [_op(ret, _errno(REFUSED.get(name, EPERM)))]
        prog += [_op(jeq, nr, 0, len(block)), *block]
    return b"".join([*prog, _op(ret, ALLOW)])


# -- Landlock --------------------------------------------------------------------------------------------------

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446  # the same number on every architecture
READ = 1 << 0 | 1 << 2 | 1 << 3  # execute, read file, read dir
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}


def _call(fn: Any, *args: Any) -> int:
    """A variadic libc call with every integer passed as a C long (what the kernel reads)."""
    return int(fn(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args)))


def _landlock(libc: ctypes.CDLL, read: list[str], write: list[str]) -> str | None:
    abi = _call(libc.syscall, CREATE_RULESET, None, 0, 1)
    if abi < 1:
        return f"Landlock is not available ({os.strerror(ctypes.get_errno())})"
    fs = FS_BY_ABI[max(v for v in FS_BY_ABI if v <= abi)]
    net = 0b11 if abi >= 4 else 0  # TCP bind and connect, with no rule allowing any port
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets and signals outside the sandbox
    attr = struct.pack("QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = _call(libc.syscall, CREATE_RULESET, attr, len(attr), 0)
    if ruleset < 0:
        return f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}"
    for path, access in [*((p, READ) for p in read), *((p, fs) for p in write)]:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a root that this system does not have
        rule = struct.pack("=Qi", access if os.path.isdir(path) else access & 0b111, fd)
        done = _call(libc.syscall, ADD_RULE, ruleset, 1, rule, 0)
        os.close(fd)
        if done != 0:
            return f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}"
    if _call(libc.syscall, RESTRICT_SELF, ruleset, 0) != 0:
        return f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}"
    return None


def confine(read: list[str], write: list[str]) -> list[str]:
    """Confines this process for good; returns what could not be applied (empty: all of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if _call(libc.prctl, 38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: what lets an unprivileged process do the rest
        return [f"no_new_privs: {os.strerror(ctypes.get_errno())}"]
    missing = []
    why = _landlock(libc, read, write)
    if why:
        missing.append(why)
    machine = platform.machine()
    if machine not in ABIS:
        return [*missing, f"no seccomp filter for {machine}"]
    prog = seccomp_program(machine, os.getpid())
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
    if _call(libc.prctl, 22, 2, fprog, 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        missing.append(f"seccomp: {os.strerror(ctypes.get_errno())}")
    return missing
