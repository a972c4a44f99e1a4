"""TRL's ``SFTTrainer`` with one device-specific change to how the loss is computed.

TRL always routes the SFT loss through its chunked log-prob LM head, which never materialises the
``(batch, seq, vocab)`` logits and also computes per-token entropy and top-1 accuracy for its metrics. That saves
GPU memory on 150k-token vocabularies. Off CUDA it has no Triton kernel and costs time instead: measured on this
project's CPU benchmark it made each step about 20 % slower than the model's own cross-entropy (docs/benchmarks.md).
On CUDA we keep TRL's path; elsewhere we use ``transformers.Trainer.compute_loss``, the same objective (summed token
NLL over ``num_items_in_batch``). Training then skips the extra metrics; evaluation still reports
``mean_token_accuracy`` (computed from the logits it has anyway), which checkpoints carry as the validation accuracy.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer
from trl import SFTTrainer


class SageSFTTrainer(SFTTrainer):
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:  # fmt: skip
        if self.args.device.type == "cuda":
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)  # fmt: skip
        if model.training:
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)  # fmt: skip
        loss, outputs = Trainer.compute_loss(self, model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)  # fmt: skip
        labels = inputs["labels"][:, 1:]
        valid = labels != -100
        if valid.any():
            correct = (outputs.logits[:, :-1].argmax(-1) == labels) & valid
            self._metrics["eval"]["mean_token_accuracy"].append((correct.sum() / valid.sum()).item())
        return (loss, outputs) if return_outputs else loss
