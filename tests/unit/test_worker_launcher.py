"""The trainer launcher: one device is a plain ``python -m``, several go through torchrun; no secrets inherited."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sage_ft_worker.launcher import TRAINER_MODULE, trainer_command
from sage_ft_worker.settings import trainer_environment


def test_single_device_is_plain_python_and_several_use_torchrun() -> None:
    assert trainer_command(1, ["--workdir", "w"]) == [sys.executable, "-m", TRAINER_MODULE, "--workdir", "w"]
    multi = trainer_command(4, ["--workdir", "w"])
    assert multi[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert multi[5:] == ["-m", TRAINER_MODULE, "--workdir", "w"]


def test_the_trainer_does_not_inherit_store_or_redis_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGE_STORAGE_S3_SECRET_KEY", "s3cr3t")
    monkeypatch.setenv("SAGE_REDIS_URL", "redis://:pw@host/0")
    monkeypatch.setenv("SAGE_GATEWAY_API_KEYS", "t:abc")
    monkeypatch.setenv("SAGE_HOME", "/tmp/h")
    env = trainer_environment()
    assert "s3cr3t" not in env.values() and "SAGE_REDIS_URL" not in env and "SAGE_GATEWAY_API_KEYS" not in env
    assert env["SAGE_HOME"] == "/tmp/h"


def test_a_checkpoint_is_handed_over_as_a_copy_the_trainer_rotation_cannot_delete(tmp_path: Path) -> None:
    """The trainer's save_total_limit rotation deleted checkpoints the worker was still uploading (seen in the compose
    test): the event now names a hard-linked copy that lives until the worker removes it."""
    from sage_ft.training.callbacks import ProgressEvent
    from sage_ft_worker.trainer_main import EVENTS, FileProgress

    ckpt = tmp_path / "out" / "checkpoints" / "checkpoint-20"
    (ckpt / "rng").mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"weights" * 100)
    (ckpt / "rng" / "rng_state.pth").write_bytes(b"rng")
    progress = FileProgress(tmp_path, writer=True)
    progress.on_event(ProgressEvent(kind="checkpoint", step=20, total_steps=40, checkpoint=str(ckpt)))
    shutil.rmtree(ckpt)  # the rotation at a later save
    event = json.loads((tmp_path / EVENTS).read_text().splitlines()[-1])
    staged = Path(event["checkpoint"])
    assert staged != ckpt and staged.name == "checkpoint-20"
    assert (staged / "adapter_model.safetensors").read_bytes() == b"weights" * 100
    assert (staged / "rng" / "rng_state.pth").read_bytes() == b"rng"
