"""``sage_varlen`` on its own: per-sequence causal attention over a packed row equals attention computed for each
sequence separately, with multi-head and grouped-query shapes; without boundaries, or with a sequence longer than
a sliding window, it is exactly sdpa with the mask it is given."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from sage_ft.training.attention import varlen_sdpa_forward  # noqa: E402


class Attn(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def packed(lengths: list[int], heads: int, kv_heads: int, dim: int) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(sum(lengths))
    total = sum(lengths)
    q = torch.randn(1, heads, total, dim)
    k, v = torch.randn(1, kv_heads, total, dim), torch.randn(1, kv_heads, total, dim)
    bounds = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    return q, k, v, bounds


@pytest.mark.parametrize(("lengths", "heads", "kv_heads"), [([5, 17, 1, 9], 4, 4), ([30, 3, 12], 8, 2)])
def test_each_sequence_attends_only_to_itself(lengths: list[int], heads: int, kv_heads: int) -> None:
    q, k, v, bounds = packed(lengths, heads, kv_heads, 16)
    module = Attn(heads // kv_heads)
    out, _ = varlen_sdpa_forward(module, q, k, v, None, scaling=0.25, cu_seq_lens_q=bounds, cu_seq_lens_k=bounds)
    assert out.shape == (1, sum(lengths), heads, 16)
    for start, end in itertools.pairwise(bounds.tolist()):
        alone, _ = sdpa_attention_forward(module, q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], None,
                                          scaling=0.25)  # fmt: skip
        torch.testing.assert_close(out[:, start:end], alone, atol=1e-5, rtol=1e-5)
    whole, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.25)  # one causal pass across the row
    assert (whole[:, bounds[1] :] - out[:, bounds[1] :]).abs().max() > 1e-3


def test_without_boundaries_or_past_a_window_it_is_sdpa_with_its_mask() -> None:
    q, k, v, bounds = packed([6, 10], 2, 2, 8)
    module = Attn(1)
    mask = torch.ones(16, 16, dtype=torch.bool).tril()[None, None]
    mask[..., 6:, :6] = False
    expected, _ = sdpa_attention_forward(module, q, k, v, mask)
    plain, _ = varlen_sdpa_forward(module, q, k, v, mask)
    windowed, _ = varlen_sdpa_forward(module, q, k, v, mask, cu_seq_lens_q=bounds, sliding_window=4)
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(windowed, expected)
