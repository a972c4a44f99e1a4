"""Attention whose cost follows the packed sequences, not the packed row (issue 17).

With ``packing=True`` TRL packs records best-fit into bins of at most ``max_length`` tokens and its padding-free
collator lays a batch out as one row with restarting ``position_ids`` and the sequence boundaries
(``cu_seq_lens_q``). Flash-attention's varlen kernel reads those boundaries. Off flash-attention, transformers turns
the restarting positions into a dense block-diagonal mask over the whole row, and SDPA then computes every entry
of the square (about 96 % of them masked out on mixed-length data).

``sage_varlen`` reads the same boundaries and runs SDPA once per sequence with ``is_causal=True``: no token can see
across a boundary, no mask is built or read, and the work is the sum of the sequences' own triangles. Any call
without boundaries (evaluation, generation, unpacked batches) is plain ``sdpa``, mask included.
"""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any

VARLEN = "sage_varlen"


def varlen_sdpa_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                        scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:  # fmt: skip
    """The ``AttentionInterface`` contract: ``query``/``key``/``value`` are (batch, heads, seq, dim); the output is
    (batch, seq, heads, dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    edges = bounds.tolist() if bounds is not None else []
    window = kwargs.get("sliding_window")  # a sequence longer than the window needs sdpa's banded mask
    if (not edges or query.shape[0] != 1 or query.shape[2] != key.shape[2]
            or (window and max(b - a for a, b in itertools.pairwise(edges)) > window)):  # fmt: skip
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    gqa = query.shape[1] != key.shape[1]
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=gqa,
        )
        for start, end in itertools.pairwise(edges)
        if end > start
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``sage_varlen`` a name transformers accepts as ``attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(VARLEN, varlen_sdpa_forward)
    AttentionMaskInterface.register(VARLEN, sdpa_mask)  # unpacked calls get exactly sdpa's mask


def attention_for(device: str, packing: bool) -> str | None:
    """The implementation that does the least attention work here: flash-attention's varlen kernel on CUDA where it
    is installed, per-sequence SDPA for packed batches elsewhere, and the model's default otherwise."""
    if not packing:
        return None
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    register()
    return VARLEN
