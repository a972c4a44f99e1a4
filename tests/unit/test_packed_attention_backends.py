"""The packed-attention backends on their own (``sage_ft.training.attention``).

Each backend that runs on a CPU (per-sequence SDPA, FlexAttention) is checked against attention computed for each
sequence separately, with multi-head and grouped-query shapes, with and without a sliding window. torch's
``varlen_attn`` runs only on CUDA, so its dispatch is checked with a stand-in kernel of each signature torch has
shipped (2.10's ``is_causal``; 2.11 and later's ``window_size``, ``scale`` and ``enable_gqa``): the inputs it is
handed (layout, boundaries, longest sequence, causality, scale) and what is done with its output. The choice of
backend is checked for the devices, dtypes and head sizes that decide it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from attention_stand_ins import stand_in_kernel  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from sage_ft.errors import ConfigError  # noqa: E402
from sage_ft.training import attention  # noqa: E402


class Attn(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def packed(lengths: list[int], heads: int, kv_heads: int, dim: int) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(sum(lengths) + heads)
    total = sum(lengths)
    q = torch.randn(1, heads, total, dim)
    k, v = torch.randn(1, kv_heads, total, dim), torch.randn(1, kv_heads, total, dim)
    bounds = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    return q, k, v, bounds


def alone(q: Any, k: Any, v: Any, bounds: Any, scaling: float, window: int | None = None) -> list[Any]:
    """Each sequence's attention computed on its own, (1, length, heads, dim) each."""
    module = Attn(q.shape[1] // k.shape[1])
    out = []
    for start, end in itertools.pairwise(bounds.tolist()):
        mask = None
        if window:
            pos = torch.arange(end - start)
            mask = ((pos[:, None] >= pos[None, :]) & (pos[:, None] - pos[None, :] < window))[None, None]
        part, _ = sdpa_attention_forward(
            module, q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], mask, scaling=scaling
        )
        out.append(part)
    return out


SHAPES = [([5, 17, 1, 9], 4, 4, None), ([30, 3, 12], 8, 2, None), ([30, 3, 12], 8, 2, 7)]


def run_packed(backend: str, q: Any, k: Any, v: Any, bounds: Any, window: int | None = None) -> Any:
    """The backend's attention over a packed row, with the keyword arguments TRL's collator gives the model."""
    longest = int(bounds.diff().max())
    out, _ = attention._packed_forward(backend)(
        Attn(q.shape[1] // k.shape[1]),
        q,
        k,
        v,
        None,
        scaling=0.25,
        cu_seq_lens_q=bounds,
        cu_seq_lens_k=bounds,
        max_length_q=longest,
        sliding_window=window,
    )
    return out


def assert_each_as_alone(out: Any, q: Any, k: Any, v: Any, bounds: Any, window: int | None = None) -> None:
    assert out.shape == (1, q.shape[2], q.shape[1], q.shape[3])
    expected = alone(q, k, v, bounds, 0.25, window)
    for (start, end), part in zip(itertools.pairwise(bounds.tolist()), expected, strict=True):
        torch.testing.assert_close(out[:, start:end], part, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize(("lengths", "heads", "kv_heads", "window"), SHAPES)
def test_each_sequence_attends_only_to_itself(
    backend: str, lengths: list[int], heads: int, kv_heads: int, window: int | None
) -> None:
    q, k, v, bounds = packed(lengths, heads, kv_heads, 16)
    out = run_packed(backend, q, k, v, bounds, window)
    assert_each_as_alone(out, q, k, v, bounds, window)
    whole, _ = sdpa_attention_forward(Attn(heads // kv_heads), q, k, v, None, scaling=0.25)  # causal across the row
    assert (whole[:, bounds[1] :] - out[:, bounds[1] :]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", ["sdpa", "flex", "varlen"])
def test_without_boundaries_it_is_causal_sdpa(backend: str) -> None:
    q, k, v, _ = packed([6, 10], 2, 2, 8)
    expected, _ = sdpa_attention_forward(Attn(1), q, k, v, None)
    got, _ = attention._packed_forward(backend)(Attn(1), q, k, v, None)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("signature", ["2.10", "2.13"])
@pytest.mark.parametrize(("lengths", "heads", "kv_heads"), [([5, 17, 1, 9], 4, 4), ([30, 3, 12], 8, 2)])
def test_varlen_dispatch_hands_the_kernel_the_packed_layout(
    signature: str, lengths: list[int], heads: int, kv_heads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(attention, "varlen_kernel", lambda: stand_in_kernel(signature, calls))
    q, k, v, bounds = packed(lengths, heads, kv_heads, 16)
    out = run_packed("varlen", q, k, v, bounds)
    (call,) = calls
    total = sum(lengths)
    assert call["cu"] is bounds and call["cu_k"] is bounds  # the collator's tensor as it is: no copy, no host read
    assert call["max"] == (max(lengths), max(lengths)) and call["causal"]
    if signature == "2.10":  # no enable_gqa or scale there: key/value heads repeated, the query pre-scaled
        assert call["shapes"] == ((total, heads, 16), (total, heads, 16))
    else:
        assert call["shapes"] == ((total, heads, 16), (total, kv_heads, 16))
        assert call["scale"] == 0.25 and call["gqa"] == (heads != kv_heads)
    assert_each_as_alone(out, q, k, v, bounds)


def test_the_flex_block_mask_is_built_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    real = attention.document_block_mask
    monkeypatch.setattr(attention, "document_block_mask", lambda *a: built.append(a) or real(*a))
    q, k, v, bounds = packed([5, 17, 9], 4, 4, 16)
    forward = attention._packed_forward("flex")
    for _layer in range(3):  # every layer of one forward gets the same boundary tensor
        forward(Attn(1), q, k, v, None, cu_seq_lens_q=bounds, max_length_q=17)
    forward(Attn(1), q, k, v, None, cu_seq_lens_q=bounds.clone(), max_length_q=17)  # the next batch
    assert len(built) == 2


@pytest.mark.parametrize(
    ("device", "dtype", "head_dim", "installed", "expected"),
    [
        ("cpu", "float32", 64, {"varlen", "flex"}, "sdpa"),
        ("cuda", "bfloat16", 64, {"varlen", "flex", "flash_attn"}, "varlen"),
        ("cuda", "float16", 128, {"varlen", "flex"}, "varlen"),
        ("cuda", "float32", 64, {"varlen", "flex"}, "flex"),  # the varlen kernel takes half precision only
        ("cuda", "bfloat16", 320, {"varlen", "flex"}, "flex"),  # nor a head over 256
        ("cuda", "bfloat16", 64, {"flex"}, "flex"),  # torch < 2.10
        ("cuda", "bfloat16", 64, {"flash_attn"}, "flash_attn"),
        ("cuda", "bfloat16", 64, set(), "sdpa"),
    ],
)
def test_the_choice_follows_device_dtype_and_what_is_installed(
    device: str, dtype: str, head_dim: int, installed: set[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGE_TRAIN_PACKED_ATTENTION", raising=False)
    monkeypatch.setattr(
        attention, "varlen_kernel", lambda: stand_in_kernel("2.13", []) if "varlen" in installed else None
    )
    monkeypatch.setattr(attention, "_flex_available", lambda: "flex" in installed)
    real_find = attention.importlib.util.find_spec
    monkeypatch.setattr(
        attention.importlib.util,
        "find_spec",
        lambda name: (
            object()
            if name == "flash_attn" and "flash_attn" in installed
            else None
            if name == "flash_attn"
            else real_find(name)
        ),
    )
    choice = attention.choose_attention(device, dtype, head_dim)
    assert choice.backend == expected
    assert choice.implementation == attention.BACKENDS[expected]


def test_an_operator_choice_that_cannot_run_here_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for backend in ("varlen", "flex", "flash_attn"):  # flex runs forward on a CPU, but has no backward pass there
        monkeypatch.setenv("SAGE_TRAIN_PACKED_ATTENTION", backend)
        with pytest.raises(ConfigError, match=rf"SAGE_TRAIN_PACKED_ATTENTION={backend} cannot run here: it needs CUDA"):
            attention.choose_attention("cpu", "float32", 64)
    monkeypatch.setenv("SAGE_TRAIN_PACKED_ATTENTION", "sdpa")
    assert attention.choose_attention("cuda", "bfloat16", 64).reason == "set by SAGE_TRAIN_PACKED_ATTENTION"
