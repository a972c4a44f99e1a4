"""Typed settings for the core library: the one place in ``sage_ft`` where environment variables are read.

Every field has a description and a default. Services keep their own settings module and may compose these
groups; nothing else in the package calls ``os.getenv``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PathSettings(BaseSettings):
    """Where sage-ft keeps local state on a single machine (the embedded default stack)."""

    model_config = SettingsConfigDict(env_prefix="SAGE_", extra="ignore")

    home: Path = Field(
        default=Path("~/.sage"),
        description="Root of local sage-ft state (models, fine-tune outputs, run files).",
    )
    models_root: Path | None = Field(
        default=None,
        description="Directory of local base models addressed by name; defaults to <home>/models.",
    )
    output_root: Path | None = Field(
        default=None,
        description="Directory where quickstart/CLI fine-tunes write their results; defaults to "
        "<home>/finetune_output.",
    )

    def resolved_home(self) -> Path:
        return self.home.expanduser()

    def resolved_models_root(self) -> Path:
        return (self.models_root or self.resolved_home() / "models").expanduser()

    def resolved_output_root(self) -> Path:
        return (self.output_root or self.resolved_home() / "finetune_output").expanduser()


class TrainingEnvSettings(BaseSettings):
    """Process-wide knobs for training that operators set, not users."""

    model_config = SettingsConfigDict(env_prefix="SAGE_TRAIN_", extra="ignore")

    allow_remote_code: bool = Field(
        default=False,
        description="Allow configs to set trust_remote_code=True. Off by default: hub code runs arbitrary Python.",
    )
    offline: bool = Field(
        default=False,
        description="Never contact a model hub; resolve models from local paths and caches only.",
    )


@lru_cache(maxsize=1)
def path_settings() -> PathSettings:
    return PathSettings()


def training_env_settings() -> TrainingEnvSettings:
    return TrainingEnvSettings()


__all__ = ["PathSettings", "TrainingEnvSettings", "path_settings", "training_env_settings"]
