"""``/v1/presets``: the named starting points a job may ask for (``extra_body={"preset": ...}``)."""

from __future__ import annotations

from typing import Literal

from sage_ft.presets import PresetInfo
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

    @classmethod
    def from_info(cls, preset: PresetInfo) -> Preset:
        """The settings that tell presets apart; ``auto`` has only its description."""
        config = preset.config
        if config is None:
            return cls(id=preset.name, object="preset", description=preset.description)
        return cls(
            id=preset.name,
            object="preset",
            description=preset.description,
            quantization="4bit" if config.load_in_4bit else "8bit" if config.load_in_8bit else "none",
            max_length=config.max_length,
            batch_size=config.per_device_train_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            lora_rank=config.lora.r,
            learning_rate=config.learning_rate,
        )


class PresetList(ApiModel):
    object: Literal["list"]
    data: list[Preset]
