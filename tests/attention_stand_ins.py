"""CPU stand-ins for the CUDA-only parts of the packed-attention backends, for tests of their dispatch.

- ``stand_in_kernel``: torch's ``varlen_attn`` (CUDA only) with the signature of a torch release; it records what
  it is handed and computes per-sequence causal attention on the (tokens, heads, dim) layout.
- ``dense_flex``: FlexAttention, whose backward pass exists only on CUDA: it evaluates the block mask's own
  ``mask_mod`` into a dense mask, then runs SDPA with it.

Both keep autograd, so a model can train through them."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch


def stand_in_kernel(signature: str, calls: list[dict[str, Any]]) -> Callable[..., Any]:
    """A CPU kernel with ``varlen_attn``'s signature of a torch release, which records what it is handed and
    computes per-sequence causal attention on the (tokens, heads, dim) layout."""

    def compute(q: Any, k: Any, v: Any, cu: Any, scale: float | None, gqa: bool) -> Any:
        parts = []
        for start, end in itertools.pairwise(cu.tolist()):
            parts.append(
                torch.nn.functional.scaled_dot_product_attention(
                    q[start:end].transpose(0, 1),
                    k[start:end].transpose(0, 1),
                    v[start:end].transpose(0, 1),
                    is_causal=True,
                    scale=scale,
                    enable_gqa=gqa,
                ).transpose(0, 1)
            )
        return torch.cat(parts)

    if signature == "2.10":

        def varlen_attn(
            query: Any,
            key: Any,
            value: Any,
            cu_seq_q: Any,
            cu_seq_k: Any,
            max_q: int,
            max_k: int,
            *,
            is_causal: bool = False,
        ) -> Any:
            calls.append(
                dict(shapes=(query.shape, key.shape), cu=cu_seq_q, cu_k=cu_seq_k, max=(max_q, max_k), causal=is_causal)
            )
            return compute(query, key, value, cu_seq_q, None, False)

        return varlen_attn

    def varlen_attn_new(
        query: Any,
        key: Any,
        value: Any,
        cu_seq_q: Any,
        cu_seq_k: Any,
        max_q: int,
        max_k: int,
        *,
        return_aux: Any = None,
        scale: float | None = None,
        window_size: tuple[int, int] = (-1, -1),
        enable_gqa: bool = False,
    ) -> Any:
        calls.append(
            dict(
                shapes=(query.shape, key.shape),
                cu=cu_seq_q,
                cu_k=cu_seq_k,
                max=(max_q, max_k),
                causal=window_size == (-1, 0),
                scale=scale,
                gqa=enable_gqa,
            )
        )
        return compute(query, key, value, cu_seq_q, scale, enable_gqa)

    return varlen_attn_new


def dense_flex(
    query: Any, key: Any, value: Any, *, block_mask: Any, scale: float | None = None, enable_gqa: bool = False
) -> Any:
    from torch.nn.attention.flex_attention import create_mask

    tokens = query.shape[2]
    mask = create_mask(block_mask.mask_mod, None, None, tokens, tokens, device=query.device)
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scale, enable_gqa=enable_gqa
    )
