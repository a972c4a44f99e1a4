"""Liger's fused kernels are chosen for CUDA only, where the package is installed and the operator allows it."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("trl")

from sage_ft.training.trainer import use_liger


@pytest.fixture
def liger_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "liger_kernel" else real(name, *a)
    )


def test_never_off_cuda(liger_installed: None) -> None:
    assert use_liger("cpu") is False


def test_on_cuda_when_installed_and_allowed(liger_installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert use_liger("cuda") is True
    monkeypatch.setenv("SAGE_TRAIN_LIGER_KERNELS", "false")
    assert use_liger("cuda") is False


def test_not_when_missing() -> None:
    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    assert use_liger("cuda") is False
