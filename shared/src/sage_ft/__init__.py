"""sage-ft core library.

The documented API works with no service running::

    from sage_ft import LoRATrainer, TrainingConfig, PresetConfigs, LoRAConfig, evaluate

Config, presets and data validation import without torch; ``LoRATrainer`` and ``merge_adapter`` load the
``train`` extra on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sage_ft.config import DEFAULT_MODEL, DPOSettings, LoRAConfig, TrainingConfig
from sage_ft.errors import ConfigError, DataError, MergeError, ModelNotFoundError, SageFTError, TrainingOOMError
from sage_ft.presets import PresetConfigs

if TYPE_CHECKING:
    from sage_ft.evals.local import evaluate
    from sage_ft.training import LoRATrainer, merge_adapter

__all__ = [
    "DEFAULT_MODEL",
    "ConfigError",
    "DPOSettings",
    "DataError",
    "LoRAConfig",
    "LoRATrainer",
    "MergeError",
    "ModelNotFoundError",
    "PresetConfigs",
    "SageFTError",
    "TrainingConfig",
    "TrainingOOMError",
    "evaluate",
    "merge_adapter",
]
_LAZY = {"LoRATrainer", "merge_adapter", "build_tiny_model"}


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from sage_ft.evals.local import evaluate

        return evaluate
    if name in _LAZY:
        try:
            from sage_ft import training
            from sage_ft.training import tiny_model
        except ImportError as err:
            raise ImportError(
                f"sage_ft.{name} needs the training extra: pip install 'sage-ft-core[train]' ({err})"
            ) from None
        return getattr(training, name, None) or getattr(tiny_model, name)
    raise AttributeError(f"module 'sage_ft' has no attribute {name!r}")
