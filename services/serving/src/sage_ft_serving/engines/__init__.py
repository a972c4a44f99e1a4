"""Engines: how a model server is started for an artifact, and how a model is attached to a running one."""

from __future__ import annotations

import shutil
from pathlib import Path

from sage_ft_serving.engines.base import Engine
from sage_ft_serving.engines.transformers import TransformersEngine
from sage_ft_serving.engines.vllm import VLLMEngine
from sage_ft_serving.settings import Settings

ENGINES = ("vllm", "transformers")


def gpu_present() -> bool:
    """An NVIDIA GPU on this machine (device node or driver tool), without importing torch."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def choose_engine(settings: Settings, requested: str | None = None) -> str:
    """``requested`` if given, else the configured default; ``auto``: vLLM when installed (GPU or CPU build)."""
    name = requested or settings.serving.engine
    if name != "auto":
        return name
    if settings.serving.launcher != "process":
        return "vllm"  # containers run the official vLLM image
    return "vllm" if settings.serving.vllm_python.exists() else "transformers"


def servers_get_gpus(settings: Settings) -> bool:
    """Whether model servers run on GPUs. A process runs on this machine, so it is this machine's GPU; a container or
    pod gets the GPUs it requests (``gpus_per_server``), whatever the serving container itself has: serving runs
    without a GPU even on a GPU host, so looking at its own devices would start every vLLM container on CPU."""
    if settings.serving.launcher == "process":
        return gpu_present()
    return settings.serving.gpus_per_server > 0


def make_engine(name: str, settings: Settings) -> Engine:
    if name == "vllm":
        return VLLMEngine(settings, gpu=servers_get_gpus(settings))
    if name == "transformers":
        return TransformersEngine(settings, gpu=servers_get_gpus(settings))
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "choose_engine", "gpu_present", "make_engine", "servers_get_gpus"]
