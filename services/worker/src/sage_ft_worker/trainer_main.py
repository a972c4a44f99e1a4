"""The trainer child process: ``python -m sage_ft_worker.trainer_main --workdir DIR``, or ``--spare``.

A spare (``sage_ft_worker.spare``) imports the training stack first, then reads one line from its standard input,
``{"workdir": ..., "env": {...}}``, and trains that job as if started with ``--workdir``: its output moves to the
job's ``trainer.log``, its working directory to the job's, and the job's own secrets join its environment. An
empty read (the worker closed the pipe) ends it.

It knows nothing of Redis, Celery or object storage. It trains with ``sage_ft`` from a config file, appends
progress as JSON lines to ``events.jsonl``, stops (after a checkpoint) when ``STOP`` appears, and writes
``result.json`` at the end. The worker task owns every side effect outside this directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sage_ft.config import TrainingConfig
from sage_ft.errors import ConfigError, DataError, ModelNotFoundError, SageFTError, TrainingOOMError
from sage_ft.fsutil import disk_full_reason
from sage_ft.proc import die_with_parent
from sage_ft.training.callbacks import ProgressEvent, TrainingCallback
from sage_ft_worker.settings import TrainerProcessSettings, join_job_environment
from sage_ft_worker.trainer_files import EVENTS, RESULT, STAGED, STOP

__all__ = ["EVENTS", "RESULT", "STAGED", "STOP", "FileProgress", "main", "run", "stage"]


class FileProgress(TrainingCallback):
    """Progress out through a file, stop requests in through another: no sockets, no secrets.

    A checkpoint is handed over as a hard-linked copy under ``staged/`` (the event names the copy), because the
    trainer's own rotation (``save_total_limit``) may delete its directory while the worker still uploads it. The
    worker owns the copy and removes it once uploaded.
    """

    def __init__(self, workdir: Path, writer: bool, config: dict[str, Any] | None = None) -> None:
        self.config = config  # what the trainer loaded (``TrainingConfig.portable()``), reported on the start event
        self.events = (workdir / EVENTS).open("a", encoding="utf-8") if writer else None
        self.stop_file = workdir / STOP
        self.staged = workdir / STAGED
        self.last: ProgressEvent | None = None
        self.step_ends: list[float] = []  # wall time of each step end, to measure how fast a stop took effect
        self.stop_latency_steps: int | None = None

    def on_event(self, event: ProgressEvent) -> None:
        self.last = event
        if self.events is None:
            return
        if event.kind == "checkpoint" and event.checkpoint:
            event = dataclasses.replace(event, checkpoint=str(stage(Path(event.checkpoint), self.staged)))
        record = event.to_dict()
        if event.kind == "start" and self.config is not None:
            record["config"] = self.config
        self.events.write(json.dumps(record) + "\n")
        self.events.flush()

    def should_stop(self) -> bool:
        """Asked at every step end. The file holds the request's wall time: the steps that ended after it are the
        stop's latency in steps (1: the step that was running finished, then training stopped)."""
        self.step_ends.append(time.time())
        if not self.stop_file.exists():
            return False
        if self.stop_latency_steps is None:
            try:
                asked = float(self.stop_file.read_text() or "inf")
            except ValueError:
                asked = float("inf")
            self.stop_latency_steps = sum(1 for t in self.step_ends if t > asked) if asked != float("inf") else None
        return True


def stage(checkpoint: Path, staged: Path) -> Path:
    """Hard-link every file of ``checkpoint`` into ``staged/<its name>`` (a copy where links are refused): the data
    stays until the worker removes the copy, whatever the trainer deletes meanwhile, at no cost in space or time."""
    target = staged / checkpoint.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(checkpoint, target, copy_function=_link_or_copy)
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _error(code: str, err: BaseException) -> dict[str, Any]:
    return {"status": "error", "error": {"code": code, "message": str(err) or type(err).__name__}}


def run(workdir: Path) -> tuple[dict[str, Any], int]:
    from sage_ft.training.trainer import LoRATrainer

    writer = TrainerProcessSettings().rank == 0
    progress = FileProgress(workdir, writer)
    try:
        config = TrainingConfig.load(workdir / "config.yaml")
        progress.config = config.portable()
        result = LoRATrainer(config, callbacks=[progress]).train(resume_from_checkpoint=True)
    except TrainingOOMError as err:
        return _error("out_of_memory", err), 1
    except DataError as err:
        return _error("invalid_training_file", err), 1
    except ModelNotFoundError as err:
        return _error("model_not_found", err), 1
    except ConfigError as err:
        return _error("invalid_config", err), 1
    except SageFTError as err:
        return _error("training_error", err), 1
    except Exception as err:  # reported to the job, and the traceback is in the log
        logging.getLogger(__name__).exception("training failed")
        full = disk_full_reason(workdir, err)
        if full is not None:  # make room for the result: what this attempt wrote is lost with it anyway
            for part in (workdir / "out", workdir / STAGED):
                shutil.rmtree(part, ignore_errors=True)
            return _error("disk_full", RuntimeError(f"{full}; the attempt's files were removed")), 1
        return _error(
            "training_error", RuntimeError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        ), 1
    tokens = progress.last.tokens_seen if progress.last else 0
    return {
        "status": "stopped" if result.stopped_early else "completed",
        "global_step": result.global_step,
        "total_steps": result.total_steps,
        "train_loss": result.metrics.get("train_loss"),
        "train_seconds": result.metrics.get("train_runtime"),
        "trained_tokens": tokens,
        "resumed_from": result.resumed_from,
        "stop_latency_steps": progress.stop_latency_steps,
        "evaluation": result.evaluation,
    }, 0


def await_job() -> Path | None:
    """The spare's wait: import what every job needs, then block until the worker hands over a job."""
    started = time.monotonic()
    import peft  # noqa: F401
    import trl  # noqa: F401

    import sage_ft.training.trainer  # noqa: F401  (torch, transformers, datasets, accelerate with it)

    # What is loaded now lives as long as the process: move it out of the collector's reach, or every gc.collect()
    # (accelerate runs one as training starts) walks the whole imported stack, a quarter of a second here.
    gc.collect()
    gc.freeze()
    print(f"spare trainer {os.getpid()} ready in {time.monotonic() - started:.1f} s", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return None
    order = json.loads(line)
    workdir = Path(order["workdir"])
    log = os.open(workdir / "trainer.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    print(f"spare trainer {os.getpid()} takes {workdir.name}", flush=True)
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.chdir(workdir)
    join_job_environment(order.get("env") or {})
    print(
        f"trainer {os.getpid()}: a spare, warm for {time.monotonic() - started:.1f} s; job environment: "
        f"{sorted(order.get('env') or {})}",
        flush=True,
    )
    return workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--workdir", type=Path)
    target.add_argument("--spare", action="store_true", help="import first, then read the job from stdin")
    args = parser.parse_args(argv)
    # Started by the worker, the request was made as it started (sage_ft.proc.spawn). Started by torchrun, a rank asks
    # here to die with torchrun, which itself dies with the worker.
    die_with_parent()
    workdir = await_job() if args.spare else args.workdir
    if workdir is None:
        return 0
    args.workdir = workdir
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    body, code = run(args.workdir)
    if TrainerProcessSettings().rank == 0:
        tmp = args.workdir / (RESULT + ".tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        tmp.replace(args.workdir / RESULT)
    return code


if __name__ == "__main__":
    sys.exit(main())
