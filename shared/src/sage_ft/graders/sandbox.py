"""Python graders run user code, so each call runs in a sandbox of its own.

The ``process`` sandbox is bubblewrap (``bwrap``, Flatpak's sandbox, from Debian's ``bubblewrap``) plus kernel
resource limits. Each call gets:

- a fresh process in new network, PID, IPC and UTS namespaces: the network namespace has only its own loopback,
  so no port of the host (the gateway's included) or beyond can be reached; the PID namespace shows only itself;
- a filesystem that holds only the Python runtime and ``/usr``, read-only, with an empty ``/work`` and ``/tmp``
  on size-capped tmpfs: no file of serving, the worker or the user who started them is there to read;
- no inherited environment (``--clearenv``) and an unprivileged uid with no capabilities and ``no_new_privs``
  (``setpriv``);
- rlimits: CPU seconds, address space (memory), processes (a fork bomb hits it), the size of any file written
  (stdout and stderr are files: a grader that prints without end is stopped);
- a wall-clock limit, after which its process group (and with it the PID namespace) is killed.

The code and its inputs come on stdin and the score goes back on stdout, so nothing is shared with the host.

Under Docker a service's container may not create namespaces, so there the ``serving`` sandbox is used
(``SAGE_GRADER_PYTHON_SANDBOX=serving``, what compose sets): the gateway and workers send each call to serving,
which already starts containers for its model servers and runs the grader in a locked-down one of its own
(``sage_ft_serving.sandbox``: no network, read-only root, cgroup and rlimit limits, Docker's seccomp profile). No
other service gets the engine's socket. Where neither can run, python graders answer
``python_grader_server_error`` (``sandbox_unavailable``) rather than run unconfined.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sage_ft.settings import GraderSettings

# Runs inside the sandbox: reads {"source", "sample", "item"} from stdin, defines the grader's ``grade`` and writes
# {"score": float} or {"error": ..., "details": ...} as the last line of stdout. The grader's own prints go to stderr.
HARNESS = r"""
import json, math, sys, traceback
data = json.loads(sys.stdin.read())
out, sys.stdout = sys.stdout, sys.stderr
def answer(obj):
    out.write("\n" + json.dumps(obj) + "\n"); out.flush()
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


class Sandbox(Protocol):
    """Where python graders run: bubblewrap on this host, a container, or serving (which picks one of those)."""

    def image_allowed(self, tag: str | None) -> bool: ...

    def run(self, source: str, sample: dict[str, Any], item: Any, image_tag: str | None = None) -> PythonOutcome: ...


_uids = itertools.count()


class PythonSandbox:
    """Runs python graders under ``settings`` (limits, uid range, allowed image tags)."""

    def __init__(self, settings: GraderSettings | None = None) -> None:
        self.settings = settings or GraderSettings()

    def image_allowed(self, tag: str | None) -> bool:
        return tag is None or tag in self.settings.python_image_tags

    def available(self) -> str | None:
        """None when the sandbox can run here, else why not."""
        if shutil.which("bwrap") is None:
            return "bubblewrap (bwrap) is not installed"
        if shutil.which("setpriv") is None and os.geteuid() == 0:
            return "setpriv (util-linux) is not installed"
        return None

    def run(self, source: str, sample: dict[str, Any], item: Any, image_tag: str | None = None) -> PythonOutcome:
        """One call; every ``image_tag`` allowed runs in this host's Python (the tag is checked by the caller)."""
        started = time.monotonic()
        why = self.available()
        if why is not None:
            return PythonOutcome(None, 0.0, "sandbox_unavailable", why)
        s = self.settings
        payload = json.dumps({"source": source, "sample": sample, "item": item}).encode()
        with tempfile.TemporaryDirectory(prefix="sage-grader-") as tmp:
            out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    env={},
                    cwd=tmp,
                    start_new_session=True,
                    preexec_fn=self._limits,
                )
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(payload)
                    proc.stdin.close()
                    proc.wait(timeout=s.python_wall_seconds)
                except (subprocess.TimeoutExpired, BrokenPipeError):
                    pass
                finally:
                    timed_out = proc.poll() is None
                    _kill_group(proc)
            seconds = time.monotonic() - started
            text = _read_capped(out_path, s.python_output_bytes)
            stderr = _read_capped(err_path, 4000)
        return outcome(s, proc.returncode, timed_out, text, stderr, seconds)

    def command(self) -> list[str]:
        s = self.settings
        prefix = sys.base_prefix
        python = os.path.join(prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
        cmd = [
            *shlex.split(BWRAP),
            *("--ro-bind", prefix, prefix),
            *("--size", str(s.python_disk_bytes), "--tmpfs", "/tmp"),
            *("--size", str(s.python_disk_bytes), "--tmpfs", "/work"),
            *("--chdir", "/work", "--setenv", "HOME", "/work", "--setenv", "PATH", "/usr/bin"),
        ]
        if os.geteuid() == 0:  # bwrap sets up as root, then the grader runs as an unprivileged uid with no caps
            uid = str(s.python_uid_base + next(_uids) % s.python_uid_count)
            cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
            cmd += ["--bounding-set=-all", "--no-new-privs"]
        else:  # not root: a user namespace of our own, and this user's own (unprivileged) uid
            cmd[1:1] = ["--unshare-user", "--cap-drop", "ALL"]
        return [*cmd, python, "-I", "-S", "-c", HARNESS]

    def _limits(self) -> None:
        """In the child before exec: the rlimits bwrap, setpriv and the grader inherit."""
        s = self.settings
        cpu = int(s.python_cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (s.python_memory_bytes, s.python_memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (s.python_output_bytes, s.python_output_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nproc = s.python_processes
        if os.geteuid() != 0:  # counted per real uid: this user's own processes too
            nproc += sum(1 for p in os.listdir("/proc") if p.isdigit())
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


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
