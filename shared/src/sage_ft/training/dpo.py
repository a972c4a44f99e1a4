"""Preference training with TRL's ``DPOTrainer`` and PEFT: the data, the arguments and one change to saving.

The reference model is never a second copy of the weights:
- from a base model, TRL wraps it with the new adapter and the reference is the same model with the adapter
  disabled;
- from a fine-tune (``init_adapter``), the trained adapter starts as that fine-tune's adapter and TRL adds a frozen
  copy of it named ``ref``: the reference is exactly the parent model, at the cost of one more adapter (megabytes).

Pairs are given to TRL as conversations, so TRL renders them with the tokenizer's chat template, the one SFT and
serving use: the prompt with the generation prompt (masked out of the loss), each answer as the assistant turn
after it, its end-of-turn token included.
"""

from __future__ import annotations

import os
from typing import Any

from transformers.trainer import TRAINING_ARGS_NAME
from trl import DPOConfig, DPOTrainer

from sage_ft.config import TrainingConfig
from sage_ft.data.preference import Preference

REWARD_KEYS = {
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
}


def preference_rows(pairs: list[Preference]) -> list[dict[str, Any]]:
    """TRL's conversational preference format: the prompt messages, then each answer as one assistant turn."""
    return [
        {
            "prompt": [{"role": m["role"], "content": m["content"]} for m in p.prompt],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]


def dpo_args(common: dict[str, Any], cfg: TrainingConfig) -> DPOConfig:
    return DPOConfig(
        **common,
        beta=cfg.dpo.beta,
        loss_type=[cfg.dpo.loss_type, "sft"] if cfg.dpo.sft_weight else [cfg.dpo.loss_type],
        loss_weights=[1.0, cfg.dpo.sft_weight] if cfg.dpo.sft_weight else None,
        max_length=cfg.max_length,
        truncation_mode="keep_start",
        precompute_ref_log_probs=False,
        dataset_num_proc=None,
    )


class SageDPOTrainer(DPOTrainer):
    """Saves only the trained adapter in checkpoints.

    PEFT writes a second adapter (``ref``) into a ``ref/`` folder, and transformers' resume then loads only the
    folders, leaving the trained adapter at its starting weights: resume would silently restart from the parent.
    The ``ref`` copy is rebuilt from the parent at every start, so the checkpoint needs only ``default``.
    """

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if len(getattr(model, "peft_config", {})) <= 1:
            super()._save(output_dir, state_dict)
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, selected_adapters=["default"], safe_serialization=True)
        if not self.args.should_save:
            return
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        import torch

        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
