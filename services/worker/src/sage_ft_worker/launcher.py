"""Starting the trainer as a child process: plain ``python -m`` for one device, torchrun for several.

The child dies with the task's process (``sage_ft.proc``), so a killed worker leaves no orphan holding the GPU,
and runs in its own process group, so stopping it stops every rank torchrun started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sage_ft.proc import spawn
from sage_ft_worker.settings import trainer_environment

TRAINER_MODULE = "sage_ft_worker.trainer_main"


def trainer_command(nproc: int, args: list[str]) -> list[str]:
    if nproc <= 1:
        return [sys.executable, "-m", TRAINER_MODULE, *args]
    # --standalone: a private rendezvous on a free port, so two multi-device jobs on one host never collide
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        TRAINER_MODULE,
        *args,
    ]


def launch(
    command: list[str], log_path: Path, cwd: Path, secrets: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the trainer with its output in ``log_path``, none of the worker's credentials, and the job's own
    secrets (a W&B key) in its environment: never on its command line, which any local user can read."""
    return spawn(command, log_path, cwd=cwd, env=trainer_environment(secrets))
