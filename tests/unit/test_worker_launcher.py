"""The trainer launcher: one device is a plain ``python -m``, several go through torchrun; no secrets inherited."""

from __future__ import annotations

import sys

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
