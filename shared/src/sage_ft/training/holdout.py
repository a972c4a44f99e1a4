"""The evaluation at the end of training: the fine-tune against the model it started from, on held-out records.

It runs in the trainer, on the weights it just trained, so no model is loaded twice:
- SFT: against the base (the adapter switched off), scored against each record's answer, with the held-out loss;
- DPO: against the parent (the fine-tune the job started from, its adapter loaded beside the trained one, or the base
  with the adapter off), scored against the chosen answer, with how often each model says the rejected one;
- RFT: against the parent too, every answer scored by the job's grader (the same code as its rewards).

Answers are greedy; scores come from ``sage_ft.evals.compare``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sage_ft.config import TrainingConfig
from sage_ft.evals.compare import Case, compare, compare_graded
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
    trainer: Any, tokenizer: Any, cases: list[Case], config: TrainingConfig, grading: Any = None
) -> dict[str, Any] | None:
    """The report for up to ``config.eval_items`` held-out ``cases``: models labelled ``tuned`` and ``base`` (the
    model compared against; ``against`` says whether that is the base or the parent fine-tune), plus ``loss`` for
    SFT; None where it cannot run (several processes, no adapter, no cases). RFT needs ``grading``."""
    if trainer.args.world_size > 1:
        log.info("held-out evaluation skipped: it runs in single-process training only")
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    cases = cases[: config.eval_items]
    if not cases or not hasattr(model, "disable_adapter"):
        return None
    parent = config.init_adapter if config.method in ("dpo", "rft") else None
    tokens = config.rft.max_completion_length if config.method == "rft" else config.eval_max_new_tokens
    sft = config.method == "sft"
    held_to = config.rft.response_format if config.method == "rft" else None  # sampled as in training
    was_training = model.training
    model.eval()
    try:
        tuned_loss = heldout_loss(trainer, model) if sft else None
        with unpacked_attention(model):  # generation pads its prompts, which needs masks
            tuned = answer_all(model, tokenizer, cases, tokens, held_to)
        with _compared_model(model, parent):
            base_loss = heldout_loss(trainer, model) if sft else None
            with unpacked_attention(model):
                base = answer_all(model, tokenizer, cases, tokens, held_to)
    finally:
        model.train(was_training)
    answers = {"tuned": tuned, "base": base}
    if config.method == "rft":
        from sage_ft.graders import parse_grader

        grader = parse_grader(config.rft.grader, "rft.grader")
        report = compare_graded(cases, answers, grader, grading, config.rft.response_format)
        report["grader"] = config.rft.grader
    else:
        report = compare(cases, answers)
    if sft:
        report["loss"] = {"tuned": tuned_loss, "base": base_loss}
    report.update(method=config.method, against="parent" if parent else "base")
    log.info("held-out evaluation on %d records: %s", len(cases), report["models"])
    return report


@contextlib.contextmanager
def _compared_model(model: Any, parent_adapter: str | None) -> Iterator[None]:
    """The model the fine-tune is compared with: the base (adapter off), or the parent fine-tune, whose adapter is
    loaded beside the trained one for the duration (megabytes) and removed after."""
    if parent_adapter is None:
        with model.disable_adapter():
            yield
        return
    active = model.active_adapter
    model.load_adapter(parent_adapter, adapter_name="parent", is_trainable=False)
    model.set_adapter("parent")
    try:
        yield
    finally:
        model.set_adapter(active)
        model.delete_adapter("parent")
