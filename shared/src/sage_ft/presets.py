"""Hardware presets from the product docs, plus ``auto()`` which picks one from the detected accelerator.

Detection imports torch lazily, so importing this module (and ``sage_ft``) never needs torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sage_ft.config import LoRAConfig, TrainingConfig

log = logging.getLogger(__name__)
GIB = 1024**3


@dataclass(frozen=True)
class Accelerator:
    """What training will run on: ``kind`` is ``cuda``, ``mps`` or ``cpu``."""

    kind: str
    name: str
    memory_bytes: int = 0
    bf16: bool = False

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


@dataclass(frozen=True)
class PresetInfo:
    """A preset a job may name: its purpose, and its config (None for ``auto``, decided by the machine)."""

    name: str
    description: str
    config: TrainingConfig | None


@dataclass(frozen=True)
class PresetChoice:
    name: str
    reason: str
    config: TrainingConfig


def detect_accelerator() -> Accelerator:
    """The first CUDA device if there is one, else CPU. Without torch installed, CPU."""
    try:
        import torch
    except ImportError:
        return Accelerator("cpu", "cpu (torch not installed)")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Accelerator("cuda", props.name, int(props.total_memory), bool(torch.cuda.is_bf16_supported()))
    return Accelerator("cpu", "cpu")


def _cuda_bf16() -> bool:
    acc = detect_accelerator()
    return acc.kind == "cuda" and acc.bf16


class PresetConfigs:
    """Named starting points. Each returns a fresh ``TrainingConfig`` the caller may edit."""

    NAMES = ("rtx_3060", "rtx_4090", "a100", "minimal", "cpu", "tiny")

    @staticmethod
    def rtx_3060(**overrides: Any) -> TrainingConfig:
        """12 GB cards: 8-bit base, batch 1 x 16 accumulation, gradient checkpointing."""
        return _make(
            "rtx_3060",
            overrides,
            load_in_8bit=True,
            max_length=1024,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=16,
            gradient_checkpointing=True,
            optim="paged_adamw_8bit",
            fp16=True,
            lora=LoRAConfig(r=8, lora_alpha=16),
        )

    @staticmethod
    def rtx_4090(**overrides: Any) -> TrainingConfig:
        """24 GB cards: no quantization, batch 4 x 4, bf16 where the card supports it (else fp16)."""
        bf16 = _cuda_bf16()
        return _make(
            "rtx_4090",
            overrides,
            max_length=2048,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=4,
            gradient_checkpointing=False,
            optim="adamw_torch",
            bf16=bf16,
            fp16=not bf16,
            lora=LoRAConfig(r=8, lora_alpha=16),
        )

    @staticmethod
    def a100(**overrides: Any) -> TrainingConfig:
        """40 GB+ cards: no quantization, batch 8 x 2, bf16."""
        return _make(
            "a100",
            overrides,
            max_length=4096,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            gradient_checkpointing=False,
            optim="adamw_torch",
            bf16=True,
            lora=LoRAConfig(r=8, lora_alpha=16),
        )

    @staticmethod
    def minimal(**overrides: Any) -> TrainingConfig:
        """Under 8 GB: 4-bit NF4 with double quantization, rank 4, batch 1 x 32."""
        return _make(
            "minimal",
            overrides,
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            max_length=512,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=32,
            gradient_checkpointing=True,
            optim="paged_adamw_8bit",
            fp16=True,
            lora=LoRAConfig(r=4, lora_alpha=8),
        )

    @staticmethod
    def cpu(**overrides: Any) -> TrainingConfig:
        """No accelerator: fp32, no quantization, short sequences so a laptop finishes in minutes."""
        return _make(
            "cpu",
            overrides,
            max_length=512,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            gradient_checkpointing=False,
            optim="adamw_torch",
        )

    @staticmethod
    def tiny(**overrides: Any) -> TrainingConfig:
        """For the offline tiny model (demos, smoke tests): a high learning rate and many epochs, so a model with
        random weights memorises a built-in dataset on a CPU in a minute or two. Not for real models."""
        return _make(
            "tiny",
            overrides,
            max_length=256,
            num_train_epochs=100,
            learning_rate=3e-3,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            warmup_ratio=0.0,
            save_steps=200,
            optim="adamw_torch",
            lora=LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0),
        )

    @classmethod
    def get(cls, name: str, **overrides: Any) -> TrainingConfig:
        key = name.replace("-", "_").lower()
        if key == "auto":
            return cls.auto(**overrides)
        if key not in cls.NAMES:
            from sage_ft.errors import ConfigError

            raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(cls.NAMES)} or auto")
        factory = getattr(cls, key)
        config: TrainingConfig = factory(**overrides)
        return config

    @classmethod
    def describe(cls) -> list[PresetInfo]:
        """Each preset a job may name, with its purpose and config. ``auto`` comes first: it is what a job without a
        preset gets (the preset for the machine it trains on), so it has no config of its own."""
        out = [PresetInfo("auto", "The preset for the GPU the job trains on.", None)]
        for name in cls.NAMES:
            doc = (getattr(cls, name).__doc__ or "").strip().split("\n")[0]
            out.append(PresetInfo(name, doc, getattr(cls, name)()))
        return out

    @classmethod
    def choose(cls, accelerator: Accelerator | None = None) -> PresetChoice:
        """Pick a preset for ``accelerator`` (detected when omitted) and explain the choice."""
        acc = accelerator or detect_accelerator()
        if acc.kind != "cuda":
            return PresetChoice("cpu", f"no CUDA GPU detected ({acc.name}); using the fp32 CPU preset", cls.cpu())
        mem = acc.memory_gib
        desc = f"{acc.name} with {mem:.1f} GiB"
        if mem < 8:
            name, why = "minimal", "under 8 GiB: 4-bit QLoRA, rank 4"
        elif mem < 20:
            name, why = "rtx_3060", "8-20 GiB: 8-bit base, batch 1"
        elif mem < 36:
            name, why = "rtx_4090", "20-36 GiB: unquantized, batch 4"
        else:
            name, why = "a100", "36 GiB or more: unquantized bf16, batch 8"
        return PresetChoice(name, f"{desc}; {why}", cls.get(name))

    @classmethod
    def auto(cls, **overrides: Any) -> TrainingConfig:
        """The preset for this machine's accelerator; logs which one and why."""
        choice = cls.choose()
        log.info("preset auto -> %s (%s)", choice.name, choice.reason)
        return choice.config.update(**overrides) if overrides else choice.config


def _make(name: str, overrides: dict[str, Any], **values: Any) -> TrainingConfig:
    values["preset"] = name
    config = TrainingConfig(**values)
    return config.update(**overrides) if overrides else config
