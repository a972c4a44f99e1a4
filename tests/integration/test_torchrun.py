"""The multi-device launch path for real: the trainer under torchrun with two CPU ranks (gloo).

The worker starts exactly this command when ``SAGE_WORKER_NPROC`` > 1. Two ranks split each epoch (half the steps
of one process), rank 0 alone writes progress, the adapter and the result, every rank's part of a checkpoint is on
disk before the checkpoint is announced, and a stop request reaches both ranks at the same step (no hang).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from stack import LEARN

from sage_ft.config import TrainingConfig
from sage_ft.proc import stop
from sage_ft_worker.launcher import launch, trainer_command
from sage_ft_worker.trainer_main import EVENTS, RESULT, STOP

pytestmark = pytest.mark.slow


def _workdir(tmp_path: Path, tiny_model: Path, qa_file: Path, **extra: object) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    values = {
        "model_name": "sage-tiny",
        "data_path": str(qa_file),
        "output_dir": str(work / "out"),
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_steps": 5,
        "learning_rate": 3e-3,
        "max_length": LEARN["max_length"],
        "num_train_epochs": 1,
        **extra,
    }
    TrainingConfig(**values).save(work / "config.yaml")
    return work


def _run(work: Path, timeout: float = 240, on_event: object = None) -> int:
    proc = launch(trainer_command(2, ["--workdir", str(work)]), work / "trainer.log", work)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("torchrun trainer did not finish: " + (work / "trainer.log").read_text()[-3000:])
            if callable(on_event) and (work / EVENTS).exists():
                on_event([json.loads(line) for line in (work / EVENTS).read_text().splitlines() if line])
            time.sleep(0.1)
    finally:
        stop(proc)
    return int(proc.returncode)


def test_two_ranks_split_the_epoch_and_rank_zero_writes_once(tmp_path: Path, tiny_model: Path, qa_file: Path) -> None:
    work = _workdir(tmp_path, tiny_model, qa_file)
    assert _run(work) == 0, (work / "trainer.log").read_text()[-3000:]
    result = json.loads((work / RESULT).read_text())
    # 20 records, batch 2 per rank, 2 ranks: 5 steps (one process would take 10)
    assert result["status"] == "completed" and result["total_steps"] == 5 and result["global_step"] == 5
    events = [json.loads(line) for line in (work / EVENTS).read_text().splitlines()]
    assert [e["step"] for e in events if e["kind"] == "log"] == [1, 2, 3, 4, 5]  # one writer, not two
    ckpt = work / "out" / "checkpoints" / "checkpoint-5"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert (work / "out" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_stop_request_reaches_both_ranks(tmp_path: Path, tiny_model: Path, qa_file: Path) -> None:
    work = _workdir(tmp_path, tiny_model, qa_file, num_train_epochs=20, save_steps=1000)

    def stop_after_first_step(events: list[dict]) -> None:
        if any(e["kind"] == "log" for e in events):
            (work / STOP).touch()

    assert _run(work, on_event=stop_after_first_step) == 0, (work / "trainer.log").read_text()[-3000:]
    result = json.loads((work / RESULT).read_text())
    assert result["status"] == "stopped" and result["global_step"] < result["total_steps"] == 100
    saved = work / "out" / "checkpoints" / f"checkpoint-{result['global_step']}"
    assert (saved / "rng_state_0.pth").is_file() and (saved / "rng_state_1.pth").is_file()
    assert not (work / "out" / "adapter").exists()  # a stopped run publishes no adapter
