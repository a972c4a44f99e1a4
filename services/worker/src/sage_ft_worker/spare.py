"""A warm trainer: one trainer child started ahead of the next job, its training libraries already imported.

Most of a job's time from submit to first step used to be the child importing torch, transformers, TRL and PEFT
(about 5 s). The worker starts ``trainer_main --spare`` when it comes up and again after each job; the spare imports
everything and then blocks on its standard input. A job hands it its work directory and its own secrets down that
pipe (never on a command line), and the spare becomes that job's trainer. Each job still gets a process of its own:
a spare serves one job and is replaced after it. Multi-device jobs (torchrun) start cold.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from pathlib import Path

from sage_ft.proc import spawn, stop
from sage_ft_worker.launcher import launch, trainer_command
from sage_ft_worker.settings import trainer_environment

log = logging.getLogger(__name__)
SPARE_LOG = "spare-trainer.log"


class SpareTrainer:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        """Start a spare unless one is alive (idempotent)."""
        if not self.enabled:
            return
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            command = trainer_command(1, ["--spare"])
            log_path = self.root / SPARE_LOG
            self._proc = spawn(command, log_path, cwd=self.root, env=trainer_environment(), stdin_pipe=True)
            log.info("spare trainer %d started", self._proc.pid)

    def take(self, workdir: Path, secrets: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Hand ``workdir`` to the spare and return it as the job's trainer; None when there is no live spare."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None or proc.stdin is None:
            return None
        try:
            proc.stdin.write(json.dumps({"workdir": str(workdir), "env": secrets}).encode() + b"\n")
            proc.stdin.close()
        except OSError:  # it died between the check and the write
            stop(proc, grace_s=1)
            return None
        return proc

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            stop(proc, grace_s=2)


def start_trainer(spare: SpareTrainer, nproc: int, workdir: Path, secrets: dict[str, str]) -> subprocess.Popen[bytes]:
    """The job's trainer: the spare when there is one (single device), else a process started now."""
    proc = spare.take(workdir, secrets) if nproc == 1 else None
    if proc is not None:
        return proc
    command = trainer_command(nproc, ["--workdir", str(workdir)])
    return launch(command, workdir / "trainer.log", workdir, secrets=secrets)
