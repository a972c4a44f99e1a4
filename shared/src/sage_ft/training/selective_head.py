"""The causal-LM loss with the LM head computed only where a token is trained (issue 17, first part).

A model's own loss runs the head (``hidden x vocab``) over every position, prompt and padding included, then drops
those positions (label -100). Here the head runs only at positions whose next token carries a label, in chunks of
``chunk_size`` rows. With several chunks, each chunk's logits are recomputed in the backward pass instead of kept
(activation checkpointing), so peak memory holds one chunk's logits, whatever the vocabulary; a single chunk is kept
(no recompute: its logits are the peak either way). The prompt costs no head FLOPs.
The objective is the same: summed next-token NLL over ``num_items`` (the trainer's ``num_items_in_batch``), or the
mean over trained tokens when it is not given.

The same holds one step earlier: the last decoder layer's output at an untrained position reaches only that
position's logits, so ``last_layer_rows`` runs that layer's MLP (about 70 % of a layer's linear FLOPs) and its query
and output projections on trained positions only, forward and backward. Keys and values still run everywhere:
trained tokens read the prompt's. An untrained position's query is zero, so its (unused) attention output is
finite and gets no gradient.

``SageSFTTrainer`` uses both for every single-process training step of a model family whose forward is exactly
``lm_head(decoder(...))`` (``head_parts``); anything else keeps the model's own loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

IGNORE_INDEX = -100
# Families whose causal-LM forward is the decoder, then the head, then nothing: no logit softcapping or scaling
PLAIN_HEAD_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def trained_token_loss(
    hidden: Any, head: Callable[[Any], Any], labels: Any, num_items: Any = None, chunk_size: int = 1024
) -> Any:
    """``hidden``: the decoder's last hidden states (batch, seq, hidden); ``head``: the LM head (hidden -> vocab
    logits, softcapping included where the model has it); ``labels``: (batch, seq), -100 where no loss is taken."""
    from torch.nn import functional
    from torch.utils.checkpoint import checkpoint

    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = hidden[:, :-1, :][keep]  # (trained tokens, hidden): the only positions the head sees
    wanted = targets[keep]

    def chunk_nll(h: Any, y: Any) -> Any:
        return functional.cross_entropy(head(h).float(), y, reduction="sum")

    total = (hidden.sum() * 0.0).float()  # a graph even with nothing to train on, so backward() still works
    chunks = list(zip(rows.split(chunk_size), wanted.split(chunk_size), strict=True))
    for h, y in chunks:  # one chunk: its logits are the peak either way, so they are kept, not recomputed
        total = total + (checkpoint(chunk_nll, h, y, use_reentrant=False) if len(chunks) > 1 else chunk_nll(h, y))
    if num_items is None:
        num_items = keep.sum().clamp(min=1)
    return total / num_items


def head_parts(model: Any) -> tuple[Any, Any] | None:
    """``(decoder, lm_head)`` of a (PEFT-wrapped) causal LM whose logits are plainly ``lm_head(hidden)``, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    family, softcap = getattr(config, "model_type", None), getattr(config, "final_logit_softcapping", None)
    if family not in PLAIN_HEAD_FAMILIES or softcap:
        return None
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    return (decoder, head) if decoder is not None and head is not None else None


def chunk_rows(vocab: int, device: Any) -> int:
    """Head rows per chunk: the fp32 logits and their gradient of one chunk (about 12 bytes a vocabulary entry) fit
    in 1/16 of the free memory, between 64 MiB and 1 GiB. Peak memory then stays flat as the vocabulary grows."""
    import psutil
    import torch

    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else psutil.virtual_memory().available
    budget = min(max(free // 16, 64 << 20), 1 << 30)
    return max(16, budget // (12 * vocab))


def _rows_only(module: Any, rows: Any) -> Callable[[], None]:
    """Make ``module`` compute only ``rows`` (a (batch, seq) bool mask) and give zeros elsewhere; returns the undo."""
    import torch

    had_own = "forward" in vars(module)  # an instance forward (fused_training_ops) is kept and restored
    full = module.forward

    def forward(x: Any) -> Any:
        part = full(x[rows])
        out = torch.zeros(*rows.shape, part.shape[-1], dtype=part.dtype, device=part.device)
        out[rows] = part
        return out

    module.forward = forward

    def undo() -> None:
        if had_own:
            module.forward = full
        else:
            del module.forward

    return undo


@contextmanager
def last_layer_rows(decoder: Any, rows: Any) -> Iterator[None]:
    """While open, the last decoder layer's MLP, query and output projections compute only ``rows`` and give zeros
    elsewhere. Not under gradient checkpointing: its recomputation in backward would run them in full."""
    layers = getattr(decoder, "layers", None)
    last = layers[-1] if layers else None
    attn = getattr(last, "self_attn", None)
    parts = [getattr(last, "mlp", None), getattr(attn, "q_proj", None), getattr(attn, "o_proj", None)]
    if any(p is None for p in parts) or getattr(decoder, "gradient_checkpointing", False):
        yield
        return
    undo = [_rows_only(p, rows) for p in parts]
    try:
        yield
    finally:
        for step in undo:
            step()


def selective_causal_lm_loss(parts: tuple[Any, Any], inputs: dict[str, Any], num_items: Any, chunk_size: int) -> Any:
    """The decoder on the batch as the model's forward would run it (its last layer's MLP, query and output
    projections at trained positions only), then ``trained_token_loss``."""
    decoder, head = parts
    batch = dict(inputs)
    labels = batch.pop("labels")
    rows = labels.new_zeros(labels.shape, dtype=bool)
    rows[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t + 1
    with last_layer_rows(decoder, rows):
        hidden = decoder(**batch, use_cache=False).last_hidden_state
    return trained_token_loss(hidden, head, labels, num_items, chunk_size=chunk_size)
