"""The causal-LM loss with the LM head computed only where a token is trained (issue 17, first part).

A model's own loss runs the head (``hidden x vocab``) over every position, prompt and padding included, then drops
those positions (label -100). Here the head runs only at positions whose next token carries a label, in chunks of
``chunk_size`` rows. With several chunks, each chunk's logits are recomputed in the backward pass instead of kept
(activation checkpointing), so peak memory holds one chunk's logits, whatever the vocabulary; a single chunk is kept
(no recompute: its logits are the peak either way). The prompt costs no head FLOPs.
The objective is the same: summed next-token NLL over ``num_items`` (the trainer's ``num_items_in_batch``), or the
mean over trained tokens when it is not given.

Not wired into training yet: the trainer keeps the model's own loss until the benchmark in issue 17 shows the gain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

IGNORE_INDEX = -100


def trained_token_loss(hidden: Any, head: Callable[[Any], Any], labels: Any, num_items: Any = None,
                       chunk_size: int = 1024) -> Any:  # fmt: skip
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
