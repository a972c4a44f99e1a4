"""Attention whose cost follows the packed sequences, not the packed row (issues 17 and 27).

TRL's padding-free collator lays a packed batch out as one row with restarting ``position_ids``, and computes the
sequence boundaries once per batch, on the CPU: ``cu_seq_lens_q`` (int32, moved to the device with the batch) and
``max_length_q`` (a Python int). Both reach every attention call as keyword arguments. Off flash-attention,
transformers would turn the restarting positions into a dense (row x row) mask, reading ``position_ids`` back to the
host to find out whether the row is packed; SDPA would then compute every entry of the square, about 96 % of them
masked out on mixed-length data. The backends here read the boundaries instead:

- ``varlen``, picked on CUDA in fp16/bf16 with head_dim <= 256: ``torch.nn.attention.varlen.varlen_attn`` (torch
  2.10 and newer), FlashAttention's varlen kernel as torch ships it.
- ``flex``, picked on CUDA otherwise (fp32, or a torch without ``varlen_attn``): FlexAttention with a document
  block mask, compiled; the mask is built once per batch.
- ``flash_attn``, picked on CUDA when neither is usable and the ``flash_attn`` package is installed: transformers'
  ``flash_attention_2``.
- ``sdpa``, picked off CUDA: SDPA once per sequence, ``is_causal=True``.

``SAGE_TRAIN_PACKED_ATTENTION`` forces one. Whatever is picked, nothing in
the model reads a device tensor back to the host: the per-batch values that need one (the CPU path's boundary list,
the flex block mask) are computed at the first layer and reused by the others and by gradient checkpointing.

No mask function is registered for these implementations, so transformers builds no mask at all. A call without
boundaries (a model loaded for packed training, used otherwise) is causal SDPA over each row as it is: exact for
unpadded and right-padded rows, which is all training and evaluation pass. Generation with left padding needs a
mask, so ``unpacked_attention`` switches a model to plain ``sdpa`` around it.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sage_ft.errors import ConfigError
from sage_ft.settings import training_env_settings

PACKED_SDPA = "sage_packed_sdpa"
PACKED_VARLEN = "sage_packed_varlen"
PACKED_FLEX = "sage_packed_flex"
FLASH_ATTENTION = "flash_attention_2"
BACKENDS = {"varlen": PACKED_VARLEN, "flex": PACKED_FLEX, "flash_attn": FLASH_ATTENTION, "sdpa": PACKED_SDPA}
CUDA_ORDER = ("varlen", "flex", "flash_attn", "sdpa")
HALF_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class AttentionChoice:
    """The packed-attention backend a run uses, and why (shown in the job's events)."""

    backend: str  # a key of BACKENDS
    reason: str

    @property
    def implementation(self) -> str:
        """The ``attn_implementation`` name transformers loads the model with."""
        return BACKENDS[self.backend]


class _BatchMemo:
    """Values derived from one batch's boundaries, computed by the first layer that needs them and reused by the
    rest: every layer (and a gradient-checkpointing recompute) gets the same ``cu_seq_lens_q`` tensor object."""

    def __init__(self) -> None:
        self.key: Any = None
        self.values: dict[str, Any] = {}

    def get(self, bounds: Any, name: str, make: Callable[[], Any]) -> Any:
        if self.key is not bounds:
            self.key, self.values = bounds, {}
        if name not in self.values:
            self.values[name] = make()
        return self.values[name]


_memo = _BatchMemo()


def varlen_kernel() -> Callable[..., Any] | None:
    """torch's ``varlen_attn`` where this torch has it (2.10 and newer), else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _varlen_parameters(kernel: Callable[..., Any]) -> frozenset[str]:
    """Keyword names of this torch's ``varlen_attn``: 2.10 takes ``is_causal``; later ones ``window_size``,
    ``scale`` and ``enable_gqa``."""
    return frozenset(inspect.signature(kernel).parameters)


def _varlen_windows() -> bool:
    kernel = varlen_kernel()
    return kernel is not None and "window_size" in _varlen_parameters(kernel)


def _flex_available() -> bool:
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


@functools.cache
def _flex_function(device_type: str) -> Callable[..., Any]:
    """FlexAttention, compiled on CUDA (one dynamic-shape graph for every packed row length); eager elsewhere, where
    it is the unfused reference implementation."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True) if device_type == "cuda" else flex_attention


def _unusable(backend: str, device: str, dtype: str, head_dim: int) -> str | None:
    """Why ``backend`` cannot run packed batches here, or None when it can."""
    if backend == "sdpa":
        return None
    if device != "cuda":
        return f"it needs CUDA (this run is on {device})"  # FlexAttention has no backward pass on a CPU either
    if backend == "flex":
        return None if _flex_available() else "this torch has no FlexAttention (torch >= 2.5 does)"
    if backend == "flash_attn":
        return None if importlib.util.find_spec("flash_attn") is not None else "the flash_attn package is not installed"
    if varlen_kernel() is None:
        return "this torch has no torch.nn.attention.varlen (torch >= 2.10 does)"
    if dtype not in HALF_DTYPES:
        return f"its kernel takes fp16 or bf16, and this run computes in {dtype}"
    if head_dim > 256 or head_dim % 8:
        return f"its kernel takes a head_dim up to 256 and divisible by 8, and this model's is {head_dim}"
    return None


def choose_attention(device: str, dtype: str, head_dim: int) -> AttentionChoice:
    """The packed-attention backend for a run on ``device`` computing in ``dtype``: the operator's choice
    (``SAGE_TRAIN_PACKED_ATTENTION``) if it can run here, else the first usable of ``CUDA_ORDER`` on CUDA, and
    per-sequence SDPA elsewhere."""
    forced = training_env_settings().packed_attention
    if forced != "auto":
        why = _unusable(forced, device, dtype, head_dim)
        if why:
            raise ConfigError(f"SAGE_TRAIN_PACKED_ATTENTION={forced} cannot run here: {why}")
        return AttentionChoice(forced, "set by SAGE_TRAIN_PACKED_ATTENTION")
    if device != "cuda":
        return AttentionChoice("sdpa", f"per-sequence SDPA on {device}")
    skipped: list[str] = []
    for backend in CUDA_ORDER:
        why = _unusable(backend, device, dtype, head_dim)
        if why is None:
            return AttentionChoice(backend, "; ".join(skipped) or "the first choice on CUDA")
        skipped.append(f"{backend}: {why}")
    raise AssertionError("sdpa is always usable")  # pragma: no cover


def _sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float,
    scaling: float | None,
    **kwargs: Any,
) -> tuple[Any, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    return out, None


def _band(length: int, window: int, device: Any) -> Any:
    """A causal mask that also hides keys ``window`` or more positions back (transformers' sliding window)."""
    import torch

    pos = torch.arange(length, device=device)
    gap = pos[:, None] - pos[None, :]
    return (gap >= 0) & (gap < window)


def _per_sequence_sdpa(
    query: Any, key: Any, value: Any, bounds: Any, *, dropout: float, scaling: float | None, window: int | None
) -> Any:
    import torch
    from torch.nn import functional

    edges = _memo.get(bounds, "edges", bounds.tolist)  # a host list, made once per batch
    gqa = query.shape[1] != key.shape[1]
    parts = []
    for start, end in itertools.pairwise(edges):
        if end <= start:
            continue
        band = _band(end - start, window, query.device) if window is not None and end - start > window else None
        parts.append(
            functional.scaled_dot_product_attention(
                query[:, :, start:end],
                key[:, :, start:end],
                value[:, :, start:end],
                attn_mask=band,
                dropout_p=dropout,
                scale=scaling,
                is_causal=band is None,
                enable_gqa=gqa,
            )
        )
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous()


def _varlen(
    query: Any, key: Any, value: Any, bounds: Any, longest: int | None, *, scaling: float | None, window: int | None
) -> Any:
    kernel = varlen_kernel()
    assert kernel is not None
    params = _varlen_parameters(kernel)
    if longest is None:  # TRL's collator passes it; a bare caller may not (one host read per batch)
        longest = _memo.get(bounds, "longest", lambda: int(bounds.diff().max()))
    q, k, v = (
        t[0].transpose(0, 1) for t in (query, key, value)
    )  # (batch 1, heads, tokens, dim) -> (tokens, heads, dim)
    kwargs: dict[str, Any] = {}
    if "window_size" in params:
        kwargs["window_size"] = (window - 1 if window else -1, 0)  # (left, right): causal, optionally banded
    else:
        kwargs["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if scaling is not None:
        if "scale" in params:
            kwargs["scale"] = scaling
        else:
            q = q * (scaling * q.shape[-1] ** 0.5)  # the kernel's own scale is 1/sqrt(head_dim)
    out = kernel(q, k, v, bounds, bounds, longest, longest, **kwargs)
    return out.unsqueeze(0)  # (1, tokens, heads, dim), as transformers expects


def document_block_mask(bounds: Any, tokens: int, window: int | None) -> Any:
    """FlexAttention's block mask for a packed row: causal within each sequence (banded by ``window`` if given),
    nothing across a boundary. Built on the device from the boundaries, without reading them back."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    positions = torch.arange(tokens, device=bounds.device, dtype=bounds.dtype)
    document = torch.searchsorted(bounds[1:], positions, right=True)

    def same_document_causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
        allowed = (document[q] == document[kv]) & (q >= kv)
        return allowed & (q - kv < window) if window else allowed

    return create_block_mask(same_document_causal, None, None, tokens, tokens, device=bounds.device)


def _flex(query: Any, key: Any, value: Any, bounds: Any, *, scaling: float | None, window: int | None) -> Any:
    tokens = query.shape[2]
    mask = _memo.get(bounds, "block_mask", lambda: document_block_mask(bounds, tokens, window))
    out = _flex_function(query.device.type)(
        query, key, value, block_mask=mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1]
    )
    return out.transpose(1, 2).contiguous()


def _packed_forward(backend: str) -> Callable[..., tuple[Any, None]]:
    """The ``AttentionInterface`` contract for ``backend``: ``query``/``key``/``value`` are (batch, heads, seq, dim);
    the output is (batch, seq, heads, dim)."""

    def forward(
        module: Any,
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[Any, None]:
        bounds = kwargs.get("cu_seq_lens_q")
        if bounds is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
            return _sdpa(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
        window = kwargs.get("sliding_window")
        if backend == "sdpa" or dropout or (backend == "varlen" and window and not _varlen_windows()):
            # neither kernel below takes attention dropout; torch 2.10's varlen_attn has no sliding window
            out = _per_sequence_sdpa(query, key, value, bounds, dropout=dropout, scaling=scaling, window=window)
        elif backend == "varlen":
            out = _varlen(query, key, value, bounds, kwargs.get("max_length_q"), scaling=scaling, window=window)
        else:
            out = _flex(query, key, value, bounds, scaling=scaling, window=window)
        return out, None

    forward.__name__ = f"packed_{backend}_forward"
    return forward


def register() -> None:
    """Make the packed backends names transformers accepts as ``attn_implementation`` (idempotent). No mask
    function: transformers then builds none (see the module docstring)."""
    from transformers import AttentionInterface

    for backend, name in BACKENDS.items():
        if backend != "flash_attn":
            AttentionInterface.register(name, _packed_forward(backend))


def attention_for(device: str, dtype: str, head_dim: int, packing: bool) -> AttentionChoice | None:
    """The packed-attention choice for a run, registered with transformers; None for unpacked runs (the model's
    default attention)."""
    if not packing:
        return None
    choice = choose_attention(device, dtype, head_dim)
    register()
    return choice


@contextmanager
def unpacked_attention(model: Any) -> Iterator[None]:
    """While open, ``model`` (PEFT-wrapped or not) attends through plain ``sdpa``, with the masks transformers builds
    for it: for generation, whose left-padded rows the packed implementations would not mask."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    if before not in BACKENDS.values() or before == FLASH_ATTENTION:
        yield
        return
    base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        base.set_attn_implementation(before)
