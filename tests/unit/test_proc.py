"""``sage_ft.proc``: the worker watches its trainer from a thread that yields CPU to it; a dead server's reason is its
last exception; children inherit no secret; and children start with no Python between fork and exec, yet still die
with their parent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from sage_ft.proc import call_at_lower_priority

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def _my_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_the_work_runs_niced_in_another_thread_and_the_caller_keeps_its_priority() -> None:
    before = _my_nice()
    seen = call_at_lower_priority(lambda: (threading.get_native_id(), _my_nice()), nice=7)
    assert seen[0] != threading.get_native_id()
    assert seen[1] == min(19, before + 7)
    assert _my_nice() == before
    # a process the caller starts afterwards (the next trainer) is not niced
    child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True)
    assert int(child.stdout) == before


def test_errors_reach_the_caller_and_zero_means_inline() -> None:
    def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError, match="lost"):
        call_at_lower_priority(boom, nice=5)
    assert call_at_lower_priority(threading.get_native_id, nice=0) == threading.get_native_id()


VLLM_LOG = """INFO 11-29 03:40:11 [api_server.py:1] vLLM API server version 0.32.0
(APIServer pid=12) Traceback (most recent call last):
(APIServer pid=12)   File "/x/vllm/config/model.py", line 2640, in _get_and_verify_max_len
(APIServer pid=12)     raise ValueError(
(APIServer pid=12) pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
(APIServer pid=12)   Value error, User-specified max_model_len (2048) is greater than the derived max_model_len
(APIServer pid=12) ValueError: User-specified max_model_len (2048) is greater than the derived max_model_len (1024)
INFO 11-29 03:40:12 [launcher.py:9] Shutting down FastAPI HTTP server.
/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: There appear to be 1 leaked semaphore
"""


def test_the_reason_a_server_died_is_its_last_exception_message_not_its_last_line(tmp_path: Path) -> None:
    from sage_ft.proc import failure_reason, last_error_line

    assert last_error_line(VLLM_LOG) == (
        "ValueError: User-specified max_model_len (2048) is greater than the derived max_model_len (1024)"
    )
    log = tmp_path / "server.log"
    log.write_text(VLLM_LOG)
    assert failure_reason(log).startswith("ValueError: User-specified max_model_len (2048)")
    pydantic = "Traceback\n  File x\npydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
    pydantic += "  Value error, max_model_len (4096) is too long [type=value_error, input_value=1]\n"
    pydantic += "    For further information visit https://errors.pydantic.dev\nINFO shutting down\n"
    assert last_error_line(pydantic) == (
        "ValidationError: 1 validation error for ModelConfig - Value error, max_model_len (4096) is too long"
    )
    log.write_text("starting\nKilled\n")  # no exception at all: the last lines
    assert failure_reason(log) == "starting | Killed"


def test_children_inherit_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from sage_ft.settings import child_environment

    secrets = {
        "SAGE_STORAGE_S3_SECRET_KEY": "s3cret",
        "SAGE_REDIS_URL": "redis://:pw@h:6379/0",
        "SAGE_GATEWAY_API_KEYS": "t:abc",
        "MY_SERVICE_PASSWORD": "pw",
        "GITHUB_TOKEN": "ghp",
        "HF_TOKEN": "hf_x",
    }
    for name, value in {**secrets, "SAGE_STORAGE_S3_ENDPOINT": "minio:9000", "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(name, value)
    env = child_environment({"SAGE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert not (set(secrets) - {"SAGE_REDIS_URL"}) & set(env)
    assert env["SAGE_REDIS_URL"] == "redis://127.0.0.1:1/0"  # passed explicitly, not inherited
    assert env["SAGE_STORAGE_S3_ENDPOINT"] == "minio:9000" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert child_environment(keep=("HF_TOKEN",))["HF_TOKEN"] == "hf_x"


# -- starting children: no Python between fork and exec (issue 28) ------------------------------------------------


def test_spawn_runs_no_python_code_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A ``preexec_fn`` runs Python in the forked child of a multi-threaded parent, where a lock another thread held
    at the fork (the loader's, the allocator's) can deadlock it. ``spawn`` hands Popen none: the tie to the parent is
    made after exec, by ``setpriv``."""
    from sage_ft import proc

    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, command: list[str], **kwargs: Any) -> None:
            seen.update(command=command, **kwargs)

    monkeypatch.setattr(proc.subprocess, "Popen", Recorder)
    proc.spawn(["/bin/true"], tmp_path / "log")
    assert seen.get("preexec_fn") is None and seen["start_new_session"]
    assert seen["command"][:3] == [shutil.which("setpriv"), "--pdeathsig", "KILL"]
    assert seen["command"][-1] == "/bin/true" and str(os.getpid()) in seen["command"]


@linux_only
def test_hundreds_of_children_start_while_threads_load_libraries_and_allocate(tmp_path: Path) -> None:
    """What a worker or serving process does all day: start children (200 here) while its other threads import,
    dlopen and allocate. Every child must start and exit; none may hang between fork and exec."""
    import ctypes
    import ctypes.util
    import importlib

    from sage_ft.proc import spawn, wait_exit

    stop = threading.Event()

    def busy(n: int) -> None:
        libs = [ctypes.util.find_library(name) for name in ("m", "c", "z", "ssl", "crypto")]
        while not stop.is_set():
            for lib in filter(None, libs):
                ctypes.CDLL(lib)  # the loader's lock, as a fork would catch it
            junk = [bytearray(4096 + n) for _ in range(200)]  # the allocator's locks
            del junk
            importlib.invalidate_caches()

    threads = [threading.Thread(target=busy, args=(i,), daemon=True) for i in range(12)]
    # hand the GIL round 50 times as often as usual: the spawning thread waits less for its turn, and the busy threads
    # interleave more finely, so more forks land while one of them holds a lock
    interval = sys.getswitchinterval()
    sys.setswitchinterval(interval / 50)
    for t in threads:
        t.start()
    hung = []
    try:
        for _ in range(200):
            child = spawn(["/bin/true"], tmp_path / "children.log")
            if not wait_exit(child, 20):
                hung.append(child.pid)
                child.kill()
            elif child.returncode != 0:
                hung.append(-child.returncode)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        sys.setswitchinterval(interval)
    assert not hung, f"{len(hung)} of 200 children hung or failed"


PARENT = """
import sys, time
from pathlib import Path
from sage_ft.proc import spawn
child = spawn(["sleep", "120"], Path(sys.argv[1]))
print(child.pid, flush=True)
time.sleep(120)
"""


@linux_only
def test_a_child_still_dies_with_its_parent_even_by_sigkill(tmp_path: Path) -> None:
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # the child has made its request and is sleeping
    assert Path(f"/proc/{child}").exists()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child), "the child outlived its parent"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


@linux_only
def test_a_child_whose_parent_is_already_gone_does_not_run(tmp_path: Path) -> None:
    """The request is made after the fork: a parent that died in between would never send the signal, so the child
    checks who its parent is and exits instead of running the command."""
    from sage_ft.proc import tethered

    marker = tmp_path / "ran"
    command = tethered(["/bin/sh", "-c", f"touch {marker}"], parent=1)  # not this test's pid: "already gone"
    assert subprocess.run(command, check=False).returncode == 1 and not marker.exists()
    command = tethered(["/bin/sh", "-c", f"touch {marker}"], parent=os.getpid())
    assert subprocess.run(command, check=False).returncode == 0 and marker.exists()


@linux_only
@pytest.mark.parametrize("tool", ["prlimit", "python"], ids=["prlimit", "python-fallback"])
def test_rlimits_are_set_after_exec_by_prlimit_or_a_fresh_python(tool: str, request: pytest.FixtureRequest) -> None:
    """``limited`` puts the limits on the command line, so the parent hands Popen no ``preexec_fn``. Where util-linux's
    ``prlimit`` is missing, a fresh interpreter sets the same limits and execs the command."""
    from sage_ft import proc

    if tool == "python":
        request.getfixturevalue("no_prlimit")
    command = proc.limited(["/bin/sh", "-c", "ulimit -n; ulimit -t; ulimit -c"], {"nofile": (40, 40), "cpu": (7, 8)})
    assert (Path(command[0]).name == "prlimit") == (tool == "prlimit")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["40", "7"]
    with pytest.raises(ValueError, match="unknown rlimits \\['memory'\\]"):
        proc.limited(["/bin/true"], {"memory": (1, 1)})
