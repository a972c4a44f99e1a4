"""Training (needs the ``train`` extra: torch, transformers, peft, trl, bitsandbytes)."""

import torch  # noqa: F401  (fail here, clearly, when the train extra is missing)

from sage_ft.training.callbacks import ProgressEvent, RecordingCallback, TrainingCallback
from sage_ft.training.checkpoints import latest_checkpoint
from sage_ft.training.merge import merge_adapter
from sage_ft.training.trainer import LoRATrainer, TrainResult

__all__ = [
    "LoRATrainer",
    "ProgressEvent",
    "RecordingCallback",
    "TrainResult",
    "TrainingCallback",
    "latest_checkpoint",
    "merge_adapter",
]
