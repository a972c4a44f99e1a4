"""Engine arguments derived from the artifact, and the pre-deploy check that refuses what cannot work.

Nothing here is a fixed default a real model can exceed: the context length comes from the base model's config
(position keys, RoPE scaling, the tokenizer's ``model_max_length``; a sliding window does not bound it, since
vLLM runs windowed attention), capped by the setting and by the KV-cache memory;
the LoRA rank is vLLM's smallest rank slot that holds the adapter; an adapter vLLM cannot hot-load (``modules_to_save``,
trainable tokens, a resized vocabulary, targets outside the engine's LoRA layers, DoRA, LoRA bias, a rank past 512)
is served merged, and the deployment says why. A model server that cannot start is never launched to find out:
``NotServableError`` becomes a 422 naming the reason. The rules mirror vLLM 0.11-0.32's own checks
(``_get_and_verify_max_len``, ``PEFTHelper._validate_features``, ``LoRAConfig.max_lora_rank``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sage_ft.errors import SageFTError
from sage_ft.protocol.serving import ServingMode, ServingPlan

# vLLM's LoRAConfig.max_lora_rank is a Literal of these sizes; a server holds adapters up to its slot.
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The config keys vLLM reads a model's context length from (the smallest present wins).
POSITION_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# RoPE types whose max_position_embeddings already includes the scaling (vLLM does not multiply again).
_PRESCALED_ROPE = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")
# Linear layers vLLM's LoRA supports in the decoder-only families we serve (packed names included).
LORA_LAYERS = frozenset(
    {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "qkv_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "gate_up_proj",
        "c_attn",
        "c_proj",
        "c_fc",
        "query_key_value",
        "dense",
        "dense_h_to_4h",
        "dense_4h_to_h",
        "W_pack",
        "fc1",
        "fc2",
        "out_proj",
        "wqkv",
        "wo",
        "w1",
        "w2",
        "w3",
        "in_proj",
        "x_proj",
    }
)
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
GIB = 1024**3


class NotServableError(SageFTError):
    """The artifact cannot be served by this engine with this configuration (a 422 with the reason)."""

    def __init__(self, message: str, code: str = "model_not_servable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """What the operator configured: the ceilings a plan must fit under."""

    max_model_len: int
    max_lora_rank: int
    gpu: bool
    kv_cache_gb: float  # CPU: VLLM_CPU_KVCACHE_SPACE
    gpu_memory_gb: float  # 0: unknown (no check)
    gpu_memory_utilization: float


@dataclass(frozen=True)
class Plan:
    """How one artifact is served: which part, with which engine arguments, and why."""

    mode: ServingMode  # hot-loaded on the base model's server, a server of its own, or a pooling server
    max_model_len: int | None  # None: the base config could not be read; the engine derives it
    lora_rank: int | None = None  # the server's --max-lora-rank slot (adapter mode)
    adapter_rank: int | None = None  # the adapter's own largest rank
    reason: str | None = None  # why merged, when it is
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def part(self) -> str:
        return "adapter" if self.mode == "adapter" else "merged"

    def with_rank(self, rank: int) -> Plan:
        return replace(self, lora_rank=rank)

    def to_api(self) -> ServingPlan:
        return ServingPlan(
            mode=self.mode,
            max_model_len=self.max_model_len,
            max_lora_rank=self.lora_rank,
            adapter_rank=self.adapter_rank,
            reason=self.reason,
            notes=list(self.notes),
        )


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config (multimodal configs nest it under ``text_config``)."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def model_context_length(
    config: dict[str, Any], tokenizer_config: dict[str, Any] | None = None, encoder_config: dict[str, Any] | None = None
) -> int | None:
    """The longest context the model allows, as vLLM derives it; None when the config names none.
    ``encoder_config`` is a sentence-transformers model's ``sentence_bert_config.json``: its ``max_seq_length`` wins."""
    if isinstance((encoder_config or {}).get("max_seq_length"), int):
        return int(encoder_config["max_seq_length"])  # type: ignore[index]
    cfg = text_config(config)
    found = [int(cfg[k]) for k in POSITION_KEYS if isinstance(cfg.get(k), int | float) and cfg[k] > 0]
    if not found:
        return None
    length = float(min(found))
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if isinstance(scaling, dict):
        rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
        factor = scaling.get("factor")
        if rope_type not in _PRESCALED_ROPE and isinstance(factor, int | float) and factor > 0:
            length *= factor
    # sliding_window does not bound the context: vLLM runs windowed attention (it caps only when told to disable it)
    model_max = (tokenizer_config or {}).get("model_max_length")
    if isinstance(model_max, int) and 0 < model_max < length:
        length = model_max  # a tokenizer above ~1e30 means "unset"
    return int(length)


def kv_bytes_per_token(config: dict[str, Any]) -> int | None:
    """Bytes of KV cache one token takes: 2 (K and V) x layers x KV heads x head_dim x dtype size."""
    cfg = text_config(config)
    shape = [cfg.get(k) for k in ("num_hidden_layers", "num_attention_heads", "hidden_size")]
    if not all(isinstance(v, int) and v > 0 for v in shape):
        return None
    layers, heads, hidden = (int(v) for v in shape)  # type: ignore[arg-type]
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    size = DTYPE_BYTES.get(str(model_dtype(config)), 2)
    return int(2 * layers * kv_heads * head_dim * size)


def model_dtype(config: dict[str, Any]) -> str | None:
    value = config.get("dtype") or config.get("torch_dtype") or text_config(config).get("torch_dtype")
    return str(value).replace("torch.", "") if value else None


def rank_slot(rank: int) -> int | None:
    """vLLM's smallest ``--max-lora-rank`` that holds ``rank``; None past the largest (512)."""
    return next((slot for slot in LORA_RANK_SLOTS if slot >= rank), None)


def adapter_rank(adapter_config: dict[str, Any]) -> int:
    ranks = [int(adapter_config.get("r") or 0)]
    pattern = adapter_config.get("rank_pattern") or {}
    ranks += [int(v) for v in pattern.values() if isinstance(v, int | float)]
    return max(ranks)


def hot_load_blockers(
    adapter_config: dict[str, Any], base_config: dict[str, Any] | None, tokenizer_size: int | None, limit_rank: int
) -> list[str]:
    """Why vLLM could not hot-load this adapter (an empty list: it can)."""
    why = []
    saved = [m for m in adapter_config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if saved:
        why.append(f"it trains whole modules (modules_to_save: {', '.join(saved)})")
    if adapter_config.get("trainable_token_indices"):
        why.append("it trains token embeddings (trainable_token_indices)")
    vocab = text_config(base_config or {}).get("vocab_size")
    if isinstance(vocab, int) and tokenizer_size is not None and tokenizer_size > vocab:
        why.append(f"its tokenizer has {tokenizer_size} tokens, more than the base model's {vocab}")
    targets = adapter_config.get("target_modules")
    if isinstance(targets, list):
        outside = sorted({str(t).rsplit(".", 1)[-1] for t in targets} - LORA_LAYERS)
        if outside:
            why.append(f"it targets layers vLLM's LoRA does not cover ({', '.join(outside)})")
    if adapter_config.get("use_dora"):
        why.append("it is a DoRA adapter")
    if adapter_config.get("lora_bias") or adapter_config.get("bias") not in (None, "none"):
        why.append(f"it trains biases (bias: {adapter_config.get('bias')})")
    rank = adapter_rank(adapter_config)
    if rank_slot(rank) is None or rank > limit_rank:
        why.append(f"its rank {rank} is above the largest served rank ({min(limit_rank, LORA_RANK_SLOTS[-1])})")
    return why


def fit_context(wanted: int, kv_per_token: int | None, limits: Limits, weights_bytes: int) -> tuple[int, str | None]:
    """The longest context (<= ``wanted``) whose KV cache fits the configured memory, with a note when cut."""
    if kv_per_token is None:
        return wanted, None
    if limits.gpu:
        if limits.gpu_memory_gb <= 0:
            return wanted, None
        budget = limits.gpu_memory_gb * GIB * limits.gpu_memory_utilization - weights_bytes
        where = f"{limits.gpu_memory_gb:g} GiB of GPU memory at utilization {limits.gpu_memory_utilization:g}"
    else:
        budget = limits.kv_cache_gb * GIB
        where = f"the {limits.kv_cache_gb:g} GiB CPU KV cache (VLLM_CPU_KVCACHE_SPACE)"
    fits = int(budget // kv_per_token) if budget > 0 else 0
    fits -= fits % 16  # vLLM allocates the cache in blocks of 16 tokens
    if fits >= wanted:
        return wanted, None
    if fits < 64:
        need = math.ceil((wanted * kv_per_token + max(weights_bytes, 0) * limits.gpu) / GIB)
        raise NotServableError(
            f"the model does not fit in {where}: its weights and a {wanted}-token KV cache need about {need} GiB",
            code="model_too_large",
        )
    return fits, f"context cut to {fits} tokens (the model allows {wanted}) to fit the KV cache in {where}"


def tokenizer_size(tokenizer_json: dict[str, Any] | None) -> int | None:
    """How many ids a ``tokenizer.json`` uses (its vocabulary plus added tokens)."""
    if not tokenizer_json:
        return None
    vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
    ids += [t.get("id", -1) for t in tokenizer_json.get("added_tokens") or [] if isinstance(t, dict)]
    return max((i for i in ids if isinstance(i, int)), default=-1) + 1 or None


@dataclass(frozen=True)
class Inputs:
    """What a plan is made from, read by the manager from the store and the models root (small files only)."""

    base_config: dict[str, Any] | None
    tokenizer_config: dict[str, Any] | None
    weights_bytes: int
    adapter_config: dict[str, Any] | None  # None: no adapter part (a merged-only model)
    adapter_tokenizer: dict[str, Any] | None
    training_max_length: int | None


def make_plan(hot_loads: bool, inputs: Inputs, limits: Limits) -> Plan:
    """How to serve: the part, the context length and the rank slot; ``NotServableError`` for what cannot work."""
    notes: list[str] = []
    reason = None
    mode: ServingMode = "adapter" if hot_loads and inputs.adapter_config is not None else "merged"
    rank = None
    if inputs.adapter_config is not None:
        rank = adapter_rank(inputs.adapter_config)
        if mode == "adapter":
            blockers = hot_load_blockers(
                inputs.adapter_config,
                inputs.base_config,
                tokenizer_size(inputs.adapter_tokenizer),
                limits.max_lora_rank,
            )
            if blockers:
                mode, reason = "merged", "vLLM cannot hot-load this adapter: " + "; ".join(blockers)
    config = inputs.base_config
    if config is None:
        notes.append("the base model's config.json is not readable here; the engine derives the context length")
        return Plan(
            mode=mode,
            max_model_len=None,
            lora_rank=_slot(mode, rank),
            adapter_rank=rank,
            reason=reason,
            notes=tuple(notes),
        )
    dtype = model_dtype(config)
    if dtype is not None and dtype not in DTYPE_BYTES and dtype != "auto":
        raise NotServableError(
            f"the model's dtype {dtype} is not one the engine serves (float32, bfloat16, float16)",
            code="unsupported_dtype",
        )
    allowed = model_context_length(config, inputs.tokenizer_config)
    length = limits.max_model_len if allowed is None else min(allowed, limits.max_model_len)
    if allowed is not None and allowed < limits.max_model_len:
        notes.append(f"context {allowed} tokens: the model's own limit (the setting allows {limits.max_model_len})")
    length, cut = fit_context(length, kv_bytes_per_token(config), limits, inputs.weights_bytes)
    if cut:
        notes.append(cut)
    trained = inputs.training_max_length
    if trained and trained > length:
        notes.append(f"fine-tuned on sequences of up to {trained} tokens, served with a context of {length}")
    return Plan(
        mode=mode,
        max_model_len=length,
        lora_rank=_slot(mode, rank),
        adapter_rank=rank,
        reason=reason,
        notes=tuple(notes),
    )


def _slot(mode: str, rank: int | None) -> int | None:
    return rank_slot(rank) if mode == "adapter" and rank is not None else None
