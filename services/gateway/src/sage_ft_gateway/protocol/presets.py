"""``/v1/presets``: the named starting points a job may ask for (``extra_body={"preset": ...}``)."""

from __future__ import annotations

from typing import Literal

from sage_ft_gateway.protocol.params import ApiModel


class Preset(ApiModel):
    id: str
    object: Literal["preset"]
    description: str
    quantization: Literal["none", "8bit", "4bit"] | None = None
    max_length: int | None = None
    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    lora_rank: int | None = None
    learning_rate: float | None = None


class PresetList(ApiModel):
    object: Literal["list"]
    data: list[Preset]
