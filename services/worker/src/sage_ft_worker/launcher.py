"""Starting the trainer as a child process: plain ``python -m`` for one device, torchrun for several.

The child is tied to the task's process with ``PR_SET_PDEATHSIG``: if the worker is killed (even with SIGKILL),
the kernel kills the trainer too, so no orphan keeps holding the GPU. It also runs in its own process group, so
stopping it stops every rank torchrun started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from sage_ft_worker.settings import trainer_environment

_PR_SET_PDEATHSIG = 1
TRAINER_MODULE = "sage_ft_worker.trainer_main"


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def trainer_command(nproc: int, args: list[str]) -> list[str]:
    if nproc <= 1:
        return [sys.executable, "-m", TRAINER_MODULE, *args]
    # --standalone: a private rendezvous on a free port, so two multi-device jobs on one host never collide
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", TRAINER_MODULE, *args]  # fmt: skip


def launch(command: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start the trainer with stdout/stderr in ``log_path`` (never an unread pipe)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=trainer_environment(),
            preexec_fn=die_with_parent,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Terminate the trainer's whole process group, then kill it if it does not exit within ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
