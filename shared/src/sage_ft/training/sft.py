"""TRL's ``SFTTrainer`` with two changes to how the training loss is computed.

Training steps compute the LM head only at trained positions (``selective_head``): prompt and padding tokens get no
logits. This holds on every device for a single process and a plain-head model family; under DDP/FSDP, with a label
smoother or a custom loss, or with Liger's fused kernels, the path below is kept.

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

from sage_ft.training.selective_head import chunk_rows, head_parts, selective_causal_lm_loss


class SageSFTTrainer(SFTTrainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_chunk = 0  # rows per LM-head chunk, sized from free memory at the first training step

    def _selective_parts(self, model: Any) -> tuple[Any, Any] | None:
        if (
            self.accelerator.num_processes > 1
            or self.label_smoother is not None
            or self.compute_loss_func
            or getattr(self.args, "use_liger_kernel", False)
        ):
            return None
        return head_parts(model)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if model.training and not return_outputs and (parts := self._selective_parts(model)) is not None:
            if not self._head_chunk:
                self._head_chunk = chunk_rows(parts[1].weight.shape[0], self.args.device)
            return selective_causal_lm_loss(parts, inputs, num_items_in_batch, self._head_chunk)
        if self.args.device.type == "cuda":
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        if model.training:
            return Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss, outputs = Trainer.compute_loss(
            self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        labels = inputs["labels"][:, 1:]
        valid = labels != -100
        if valid.any():
            correct = (outputs.logits[:, :-1].argmax(-1) == labels) & valid
            self._metrics["eval"]["mean_token_accuracy"].append((correct.sum() / valid.sum()).item())
        return (loss, outputs) if return_outputs else loss
