"""Child processes that never outlive their parent: shared by the worker (trainers) and serving (model servers).

A child is tied to its parent with ``PR_SET_PDEATHSIG``: if the parent dies, even by SIGKILL, the kernel kills the
child, so no orphan keeps holding a GPU or a port. It runs in its own process group, so stopping it stops everything
it started (torchrun's ranks, vLLM's engine core).

The request is made after ``exec``, never between ``fork`` and ``exec``: the parents are multi-threaded (uvicorn,
Celery, the launcher thread), and Python code in the forked child (``preexec_fn``) can deadlock on a lock another
thread held at the fork (the loader's, the allocator's). The child execs util-linux's ``setpriv --pdeathsig KILL``,
which makes the request and execs a shell that checks the parent is still the one that started it (a parent gone
before the request would never send the signal), then execs the command. Where ``setpriv`` is missing, a Python
interpreter started fresh (single-threaded) does the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux; a no-op elsewhere).

    With ``parent`` (the pid that started us), also exit at once if it is already gone: a parent that died before
    the request was made would never trigger it. The pid is compared, not "is my parent init": in a container the
    worker itself is pid 1, and a healthy trainer's parent is then 1.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


# The shell's $PPID is the pid that started it (setpriv execs it in the same process): if that is no longer the
# parent, the parent died before the request was made, and nothing would ever kill this child.
_CHECK_PARENT = 'test "$PPID" = "$0" || exit 1; exec "$@"'
_PYTHON_TETHER = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); os.execvp(sys.argv[2], sys.argv[2:])"
)


def tethered(command: list[str], parent: int) -> list[str]:
    """``command`` made to die with ``parent`` once it runs: under ``setpriv --pdeathsig KILL`` (util-linux), else a
    fresh Python interpreter that asks the same. Unchanged off Linux, where there is no such request."""
    if not sys.platform.startswith("linux"):
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", _CHECK_PARENT, str(parent), *command]
    return [sys.executable, "-I", "-S", "-c", _PYTHON_TETHER, str(parent), *command]


_RLIMITS = ("cpu", "as", "fsize", "nofile", "core", "nproc")  # prlimit's names; resource's are RLIMIT_ + upper()
_PYTHON_RLIMITS = (
    "import json, os, resource, sys\n"
    "for name, (soft, hard) in json.loads(sys.argv[1]).items():\n"
    "    resource.setrlimit(getattr(resource, 'RLIMIT_' + name.upper()), (soft, hard))\n"
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def limited(command: list[str], limits: dict[str, tuple[int, int]]) -> list[str]:
    """``command`` run under kernel rlimits (``{"cpu": (soft, hard), ...}``, names as in ``_RLIMITS``), set after
    exec by util-linux's ``prlimit``, else by a fresh Python interpreter, which then execs ``command``. A
    ``preexec_fn`` would run Python in the forked child of a threaded parent (see the module's docstring)."""
    unknown = set(limits) - set(_RLIMITS)
    if unknown:
        raise ValueError(f"unknown rlimits {sorted(unknown)}: use {', '.join(_RLIMITS)}")
    prlimit = shutil.which("prlimit")
    if prlimit is not None:
        return [prlimit, *(f"--{name}={soft}:{hard}" for name, (soft, hard) in limits.items()), "--", *command]
    as_json = json.dumps({name: list(pair) for name, pair in limits.items()})
    return [sys.executable, "-I", "-S", "-c", _PYTHON_RLIMITS, as_json, *command]


def spawn(
    command: list[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with stdout and stderr appended to ``log_path`` (never an unread pipe); with
    ``stdin_pipe`` the caller can write to its standard input (a private channel, unlike the command line). Between
    fork and exec only ``subprocess``'s own C code runs (``setsid`` and the file descriptors)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            tethered(command, os.getpid()),
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Block until ``proc`` exits or ``timeout`` passes; True if it exited.

    A pidfd makes this a real sleep. ``Popen.wait(timeout)`` would wake every 50 ms to poll, and on a small
    machine each wake-up steals a core from the child's threads.
    """
    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: sleep one tick
        time.sleep(timeout)
        return proc.poll() is not None
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return proc.poll() is not None


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Terminate the child's whole process group, then kill it if it does not exit within ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if wait_exit(proc, grace_s):
            _kill_group(proc.pid)  # leftovers of the group (children that ignored SIGTERM)
            return
    _kill_group(proc.pid)
    proc.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def call_at_lower_priority(fn: Callable[[], T], nice: int) -> T:
    """Run ``fn()`` in a helper thread ``nice`` steps below the caller's CPU priority and return its result.

    On Linux niceness is per thread, so only the helper yields: the caller keeps its priority, and processes it
    starts later (the next trainer) start at the usual one. Lowering needs no privilege; raising it back would,
    which is why the work moves to a thread rather than the caller renicing itself. Elsewhere, or with
    ``nice <= 0``, ``fn`` runs in the caller. Start children from the caller, never from ``fn``: the kernel sends
    ``PR_SET_PDEATHSIG`` when the *thread* that started a child exits, and the helper exits when ``fn`` returns.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return fn()
    box: dict[str, Any] = {}
    target = min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + nice)  # relative to the caller

    def body() -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the caller
            box["error"] = err

    helper = threading.Thread(target=body, name="sage-lower-priority", daemon=True)
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


_PREFIX = re.compile(r"^\(\w+ pid=\d+\) ")  # vLLM's per-process prefix
_PYDANTIC_TAIL = re.compile(r"\s*\[type=.*$")
_EXCEPTION_LINE = re.compile(r"\b((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)): (.+)$")


def last_error_line(text: str, limit: int = 600) -> str | None:
    """The last exception message in a log (``ValueError: max_model_len ... is greater than ...``), with any log
    prefix stripped and a multi-line message (pydantic's ``1 validation error for X`` + detail) joined; None when the
    log holds none. Engines print a traceback, then shut down noisily, so the last line is rarely the reason."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION_LINE.search(lines[i].strip())
        if not match or match.group(2).startswith("Traceback"):
            continue
        message = [match.group(2).strip()]
        for extra in lines[i + 1 : i + 4]:  # the indented detail lines that belong to it
            detail = _PREFIX.sub("", extra)
            if not detail[:1].isspace() or detail.strip().startswith(("For further information", "File ")):
                break
            message.append(_PYDANTIC_TAIL.sub("", detail.strip()))
        joined = f"{match.group(1).rsplit('.', 1)[-1]}: {' - '.join(message)}"
        return joined if len(joined) <= limit else joined[: limit - 3] + "..."
    return None


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, joined for an error message."""
    if not path.exists():
        return f"(no log at {path})"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def failure_reason(path: Path, lines: int = 3) -> str:
    """Why a process died, from its log: the last exception message, else the last lines."""
    if not path.exists():
        return f"(no log at {path})"
    return last_error_line(path.read_text(errors="replace")) or tail(path, lines)


def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                found = [int(c) for c in (task / "children").read_text().split()]
                out += found
                frontier += found
    return out


def peak_rss(pid: int) -> int:
    """The peak resident memory (``VmHWM``) of ``pid`` and every process under it, in bytes; 0 where /proc cannot
    tell (off Linux, or the process is gone). Each process's peak is the kernel's own high-water mark, so a sample
    taken now and then still sees a spike between samples."""
    total = 0
    for each in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def describe_exit(returncode: int | None, peak_rss_bytes: int = 0) -> str:
    """Why a child ended without a result, for a job's error and its events: a signal by name (SIGKILL is what the
    kernel's out-of-memory killer sends), else the exit status; with the peak memory it had reached."""
    if returncode is not None and returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        why = f"signal {number}; out of memory?" if number == signal.SIGKILL else f"signal {number}, {name}"
        text = f"the trainer was killed ({why})"
    else:
        text = f"the trainer exited with status {returncode} without a result"
    if peak_rss_bytes:
        text += f"; peak RSS {peak_rss_bytes / 2**20:.0f} MiB"
    return text
