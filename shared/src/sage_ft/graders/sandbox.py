"""Python graders run user code, so each call runs in a sandbox of its own.

The local sandbox (``PythonSandbox``) gives each call a fresh process with no inherited environment, an empty
working directory, an unprivileged uid with no capabilities and ``no_new_privs`` (``setpriv``, when started as
root), kernel rlimits (CPU seconds, address space, processes, the size of any file written: stdout and stderr are
files, so a grader that prints without end is stopped) and a wall-clock limit, after which its process group is
killed. Its isolation is the strongest the host allows (``SAGE_GRADER_PYTHON_ISOLATION``, ``auto`` by default):

- ``namespaces``: bubblewrap (``bwrap``, Flatpak's sandbox, from Debian's ``bubblewrap``) puts it in new network,
  PID, IPC and UTS namespaces (only its own loopback: no port of the host, the gateway's included, or beyond; only
  itself to see) and a filesystem that holds only the Python runtime and ``/usr``, read-only, with ``/work`` and
  ``/tmp`` on size-capped tmpfs. The grader then confines itself too, where the kernel allows (next point);
- ``confined``: where namespaces cannot be made (inside a container or a Kubernetes pod), the process confines
  itself before the grader's code runs, with Landlock (files: read the runtime and ``/usr`` only, write its own
  directory only; no ``/proc`` of another process; no TCP) and a seccomp filter (no sockets, no new processes, no
  exec, no ptrace, no signals to others): ``sage_ft.graders.confine``. Without both it does not run.

The code and its inputs come on stdin and the score goes back on stdout, so nothing is shared with the host.

Under Docker compose the ``serving`` sandbox is used (``SAGE_GRADER_PYTHON_SANDBOX=serving``): the gateway and workers
send each call to serving, which already starts containers for its model servers and runs the grader in a
locked-down one of its own (``sage_ft_serving.sandbox``: no network, read-only root, cgroup and rlimit limits,
Docker's seccomp profile, and the same self-confinement inside). No other service gets the engine's socket. Under
Helm they send it to the graders deployment, a locked-down pod (no egress, read-only root, no service-account token)
where each call is ``confined``. Where nothing can run, python graders answer ``python_grader_server_error``
(``sandbox_unavailable``) rather than run unconfined.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sage_ft.proc import limited, wait_exit
from sage_ft.settings import GraderSettings

# Runs inside the sandbox: reads {"source", "sample", "item", "confine"} from stdin, confines itself (``confine.py``,
# sent ahead of this), defines the grader's ``grade`` and writes {"score": float} or {"error": ..., "details": ...} as
# the last line of stdout. The grader's own prints go to stderr.
HARNESS = (
    Path(__file__).with_name("confine.py").read_text()
    + r"""
import json, math, sys, traceback
data = json.loads(sys.stdin.read())
out, sys.stdout = sys.stdout, sys.stderr
def answer(obj):
    out.write("\n" + json.dumps(obj) + "\n"); out.flush()
rules = data.get("confine") or {}
missing = confine([sys.base_prefix, sys.prefix, "/usr", "/lib", "/lib64"], [".", *rules.get("writable", [])])
if missing and rules.get("required"):
    answer({"error": "sandbox_unavailable", "details": "confinement failed: " + "; ".join(missing)})
    sys.exit(0)
try:
    scope = {"__name__": "grader"}
    exec(compile(data["source"], "grader.py", "exec"), scope)
    grade = scope.get("grade")
    if not callable(grade):
        answer({"error": "runtime", "details": "the source defines no function grade(sample, item)"})
    else:
        score = grade(data["sample"], data["item"])
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            answer({"error": "runtime", "details": f"grade() returned {score!r}; return a finite number"})
        else:
            answer({"score": float(score)})
except BaseException as err:
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    answer({"error": "runtime", "details": f"{type(err).__name__}: {err}", "traceback": "".join(tb[-3:])})
"""
)


def payload(source: str, sample: dict[str, Any], item: Any, *, writable: list[str], required: bool) -> bytes:
    """What ``HARNESS`` reads: the call, and the confinement it puts on itself (``required``: no score without it;
    ``writable``: besides its working directory)."""
    rules = {"writable": writable, "required": required}
    return json.dumps({"source": source, "sample": sample, "item": item, "confine": rules}).encode()


# New network, PID, IPC and UTS namespaces; only /usr (merged-/usr layout) and a fresh /proc and /dev; no environment
BWRAP = (
    "bwrap --unshare-net --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try --die-with-parent "
    "--new-session --clearenv --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 "
    "--symlink usr/bin /bin --proc /proc --dev /dev"
)


@dataclass(frozen=True)
class PythonOutcome:
    """A python grader's answer: a score, or why there is none (``error`` names OpenAI's error kind)."""

    score: float | None
    seconds: float
    error: str | None = None  # runtime | timeout | resource_limit | output_limit | sandbox_unavailable
    details: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PythonOutcome:
        return cls(
            score=None if data.get("score") is None else float(data["score"]),
            seconds=float(data.get("seconds", 0.0)),
            error=data.get("error"),
            details=data.get("details"),
        )


class Sandbox(ABC):
    """Where python graders run: on this host, in a container, or at serving (which picks one of those). Every kind
    allows the same ``image_tag`` values, the settings' list."""

    settings: GraderSettings

    def image_allowed(self, tag: str | None) -> bool:
        return tag is None or tag in self.settings.python_image_tags

    @abstractmethod
    def run(self, source: str, sample: dict[str, Any], item: Any, image_tag: str | None = None) -> PythonOutcome: ...


_uids = itertools.count()


class PythonSandbox(Sandbox):
    """Runs python graders under ``settings`` (limits, isolation, uid range, allowed image tags)."""

    def __init__(self, settings: GraderSettings | None = None) -> None:
        self.settings = settings or GraderSettings()

    def isolation(self) -> tuple[str | None, str]:
        """The isolation this host allows under ``python_isolation`` (``namespaces``, ``confined`` or None) and why
        it was chosen, or why none can run."""
        wanted = self.settings.python_isolation
        why_not = {}
        if wanted in ("auto", "namespaces"):
            why_not["namespaces"] = _namespaces_fail(os.geteuid() == 0)
            if why_not["namespaces"] is None:
                return "namespaces", "bubblewrap runs here"
        if wanted in ("auto", "confined"):
            why_not["confined"] = _confinement_fails(os.geteuid() == 0)
            if why_not["confined"] is None:
                return "confined", "Landlock and seccomp (no namespaces: " + str(why_not.get("namespaces")) + ")"
        return None, "; ".join(f"{k}: {v}" for k, v in why_not.items())

    def available(self) -> str | None:
        """None when the sandbox can run here, else why not."""
        kind, why = self.isolation()
        return None if kind else why

    def run(self, source: str, sample: dict[str, Any], item: Any, image_tag: str | None = None) -> PythonOutcome:
        """One call; every ``image_tag`` allowed runs in this host's Python (the tag is checked by the caller)."""
        kind, why = self.isolation()
        if kind is None:
            return PythonOutcome(None, 0.0, "sandbox_unavailable", why)
        confined = kind == "confined"  # /tmp is the host's there, so only the call's own directory is writable
        data = payload(source, sample, item, writable=[] if confined else ["/tmp"], required=confined)
        return _run(self.settings, limited(self.command(kind), self.limits()), data)

    def command(self, kind: str = "namespaces") -> list[str]:
        """``namespaces``: bubblewrap, then the harness (which confines itself too, where it can); ``confined``: the
        harness alone, in a fresh directory with nothing but HOME, TMPDIR and PATH in its environment."""
        s = self.settings
        cmd = [] if kind == "confined" else [*_bwrap(s), "--chdir", "/work"]
        if os.geteuid() == 0:  # the grader runs as an unprivileged uid with no caps
            uid = str(s.python_uid_base + next(_uids) % s.python_uid_count)
            cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
            cmd += ["--bounding-set=-all", "--no-new-privs"]
        elif kind != "confined":  # not root: a user namespace of our own, and this user's own (unprivileged) uid
            cmd[1:1] = ["--unshare-user", "--cap-drop", "ALL"]
        return [*cmd, _python(), "-I", "-S", "-c", HARNESS]

    def limits(self) -> dict[str, tuple[int, int]]:
        """The rlimits that bwrap, setpriv and the grader inherit (set after exec: ``proc.limited``)."""
        s = self.settings
        cpu = int(s.python_cpu_seconds)
        nproc = s.python_processes
        if os.geteuid() != 0:  # counted per real uid: this user's own processes too
            nproc += sum(1 for p in os.listdir("/proc") if p.isdigit())
        return {
            "cpu": (cpu, cpu + 1),
            "as": (s.python_memory_bytes, s.python_memory_bytes),
            "fsize": (s.python_output_bytes, s.python_output_bytes),
            "nofile": (64, 64),
            "core": (0, 0),
            "nproc": (nproc, nproc),
        }


def _python() -> str:
    prefix = sys.base_prefix
    return os.path.join(prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")


def _bwrap(s: GraderSettings) -> list[str]:
    prefix = sys.base_prefix
    return [
        *shlex.split(BWRAP),
        *("--ro-bind", prefix, prefix),
        *("--perms", "1777", "--size", str(s.python_disk_bytes), "--tmpfs", "/tmp"),  # writable by the grader's uid
        *("--perms", "1777", "--size", str(s.python_disk_bytes), "--tmpfs", "/work"),
        *("--setenv", "HOME", "/work", "--setenv", "PATH", "/usr/bin"),
    ]


def _run(s: GraderSettings, command: list[str], data: bytes) -> PythonOutcome:
    """Runs ``command`` in a fresh directory with ``data`` on its stdin, under the wall clock (its rlimits come with
    the command: ``proc.limited``). Between fork and exec only ``subprocess``'s own C code runs."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sage-grader-") as tmp:
        work = os.path.join(tmp, "work")
        os.mkdir(work)
        os.chmod(tmp, 0o711)  # confined: the unprivileged uid may pass to its directory, not list the others
        os.chmod(work, 0o777)
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env={"HOME": work, "TMPDIR": work, "PATH": "/usr/bin"},
                cwd=work,
                start_new_session=True,
            )
            try:
                assert proc.stdin is not None
                proc.stdin.write(data)
                proc.stdin.close()
                # a real sleep until it exits (a pidfd): Popen.wait(timeout) polls with doubling sleeps, and a
                # grader done at 33 ms was noticed at 63 ms
                wait_exit(proc, s.python_wall_seconds)
            except BrokenPipeError:
                pass
            finally:
                timed_out = proc.poll() is None
                _kill_group(proc)
        seconds = time.monotonic() - started
        text = _read_capped(out_path, s.python_output_bytes)
        stderr = _read_capped(err_path, 4000)
    return outcome(s, proc.returncode, timed_out, text, stderr, seconds)


def _namespaces_fail(root: bool) -> str | None:
    """Why bubblewrap cannot make its namespaces here (inside most containers and pods), or None when it can."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    if root and setpriv is None:
        return "setpriv (util-linux) is not installed"
    return _bwrap_fails(bwrap, root)


@cache
def _bwrap_fails(bwrap: str, root: bool) -> str | None:
    """One trial run of ``bwrap``, once per process."""
    cmd = [bwrap, *shlex.split(BWRAP)[1:], *([] if root else ["--unshare-user"]), "/usr/bin/true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={}, timeout=30)
    return None if proc.returncode == 0 else f"bwrap: {proc.stderr.strip() or proc.returncode}"


@cache
def _confinement_fails(root: bool) -> str | None:
    """Why Landlock and seccomp cannot confine a grader here (an old kernel, a runtime that refuses the syscalls), or
    None when they can: a trivial grader is run confined, once per process."""
    if root and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = PythonSandbox(GraderSettings(python_isolation="confined", python_wall_seconds=30, python_cpu_seconds=30))
    data = payload("def grade(s, i):\n    return 1\n", {}, None, writable=[], required=True)
    result = _run(probe.settings, limited(probe.command("confined"), probe.limits()), data)
    return None if result.score == 1.0 else str(result.details or result.error)


def outcome(
    s: GraderSettings, code: int | None, timed_out: bool, text: str, stderr: str, seconds: float
) -> PythonOutcome:
    """What a sandboxed run of ``HARNESS`` came to: its exit status (a negative one: the signal that killed it; above
    128: an init's report of one), whether the wall clock ran out, its stdout and the tail of its stderr."""
    if timed_out:
        return PythonOutcome(None, seconds, "timeout", f"no answer within {s.python_wall_seconds:g} s (wall)")
    line = text.strip().rsplit("\n", 1)[-1] if text.strip() else ""
    try:
        answer = json.loads(line) if line.startswith("{") else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "score" in answer:
        return PythonOutcome(float(answer["score"]), seconds)
    if isinstance(answer, dict) and answer.get("error") == "sandbox_unavailable":
        return PythonOutcome(None, seconds, "sandbox_unavailable", str(answer.get("details", "")))
    if isinstance(answer, dict) and answer.get("error") == "runtime":
        details = str(answer.get("details", ""))
        if details.startswith("MemoryError"):
            return PythonOutcome(None, seconds, "resource_limit", f"memory limit ({_mib(s.python_memory_bytes)})")
        if "[Errno 27]" in details:  # EFBIG: the file-size rlimit, which bounds stdout too
            return PythonOutcome(None, seconds, "output_limit", f"output limit ({s.python_output_bytes} bytes)")
        if details.startswith("BlockingIOError: [Errno 11]"):  # EAGAIN from fork(): the process rlimit
            return PythonOutcome(None, seconds, "resource_limit", f"process limit ({s.python_processes})")
        return PythonOutcome(None, seconds, "runtime", details)
    if code is not None and code > 128:  # bwrap's init reports a child killed by a signal as 128 + signal
        code = 128 - code
    if code is not None and code < 0:
        sig = -code
        why = {
            signal.SIGXCPU: f"CPU time limit ({s.python_cpu_seconds:g} s)",
            signal.SIGKILL: f"killed: CPU time ({s.python_cpu_seconds:g} s) or memory limit",
            signal.SIGXFSZ: f"output limit ({s.python_output_bytes} bytes)",
            signal.SIGSEGV: f"crashed (segmentation fault; memory limit {_mib(s.python_memory_bytes)}?)",
        }.get(signal.Signals(sig), f"killed by signal {signal.Signals(sig).name}")
        kind = "output_limit" if sig == signal.SIGXFSZ else "resource_limit"
        return PythonOutcome(None, seconds, kind, why)
    if len(text.encode()) >= s.python_output_bytes or "File too large" in stderr:
        return PythonOutcome(None, seconds, "output_limit", f"output limit ({s.python_output_bytes} bytes)")
    tail = stderr.strip().splitlines()[-1:] or [f"exit status {code}"]
    if "fork" in stderr.lower() or "Resource temporarily unavailable" in stderr:
        return PythonOutcome(None, seconds, "resource_limit", f"process limit ({s.python_processes}): {tail[0]}")
    return PythonOutcome(None, seconds, "runtime", f"the grader gave no score ({tail[0]})")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_capped(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"
