"""The evaluation at the end of training: the fine-tune against its base model, on held-out records.

It runs in the trainer, on the weights it just trained: the base's answers and loss come from the same model with
the adapter switched off, so nothing is loaded twice. Answers are greedy; scores come from ``sage_ft.evals.compare``.
"""

from __future__ import annotations

import logging
from typing import Any

from sage_ft.config import TrainingConfig
from sage_ft.evals.compare import cases_from, compare
from sage_ft.evals.local import answer_all
from sage_ft.training.attention import unpacked_attention

log = logging.getLogger(__name__)
# a packed eval batch's boundaries go with it: the packed attention reads them (and builds no mask from positions)
_MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "labels",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)


def heldout_loss(trainer: Any, model: Any) -> float | None:
    """Token-weighted mean loss over the trainer's eval dataset (the same loss training minimizes)."""
    import torch

    total, tokens = 0.0, 0
    for batch in trainer.get_eval_dataloader():
        batch = trainer._prepare_inputs(batch)
        n = int((batch["labels"][:, 1:] != -100).sum())
        if not n:
            continue
        with torch.no_grad():
            out = model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch})
        total, tokens = total + float(out.loss) * n, tokens + n
    return round(total / tokens, 5) if tokens else None


def evaluate_holdout(
    trainer: Any, tokenizer: Any, conversations: list[Any], config: TrainingConfig
) -> dict[str, Any] | None:
    """``compare``'s report for up to ``config.eval_items`` held-out records, models labelled ``tuned`` and
    ``base``, plus ``loss`` for both; None where it cannot run (several processes, no adapter, no answers)."""
    if trainer.args.world_size > 1:
        log.info("held-out evaluation skipped: it runs in single-process training only")
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    cases = cases_from(conversations, config.eval_items)
    if not cases or not hasattr(model, "disable_adapter"):
        return None
    was_training = model.training
    model.eval()
    try:
        tuned_loss = heldout_loss(trainer, model)
        with unpacked_attention(model):  # generation pads its prompts, which needs masks
            tuned = answer_all(model, tokenizer, cases, config.eval_max_new_tokens)
        with model.disable_adapter():
            base_loss = heldout_loss(trainer, model)
            with unpacked_attention(model):
                base = answer_all(model, tokenizer, cases, config.eval_max_new_tokens)
    finally:
        model.train(was_training)
    report = compare(cases, {"tuned": tuned, "base": base})
    report["loss"] = {"tuned": tuned_loss, "base": base_loss}
    log.info("held-out evaluation on %d records: %s", len(cases), report["models"])
    return report
