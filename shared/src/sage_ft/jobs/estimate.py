"""What a job will cost, before it runs: tokens, optimizer steps, wall time and peak accelerator memory.

- **Tokens and steps** come from the validated file's per-record token lengths and the resolved training config:
  the same hold-out split, truncation, packing and schedule arithmetic the trainer uses. Packing is estimated with
  first-fit-decreasing bins, which is what TRL's best-fit-decreasing gives to within a bin or two.
- **Seconds** come from recent succeeded jobs of the same base model and preset on this installation:
  ``seconds = fixed + tokens / rate``, where each job's wall time (start to finish) splits into the trainer's own
  runtime (its tokens at its speed) and the rest (process start, model load, evaluation, publishing): the fixed
  part is the median over the jobs, the speed their tokens over their runtimes (so long jobs, whose per-step
  overheads weigh less, count for more). Jobs recorded without a runtime fall back to a line fitted through (tokens,
  seconds), or with one such job its plain rate; with no job, a stated default rate.
- **Peak memory** is arithmetic on the model's ``config.json``: weights at the quantization's bytes per parameter,
  LoRA weights with gradients and optimizer state, the activations a token keeps for backward in each layer
  (``activation_bytes``; layer inputs only under gradient checkpointing), the logits as the loss meets the head
  (``head_mode``: Liger's fused cross-entropy materializes none, sage-ft's selective head one chunk, preference
  training all of them), and a fixed allowance for the CUDA context, for the fullest step the layout allows
  (``sage_ft.packing.step_tokens``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any

from sage_ft.config import TrainingConfig
from sage_ft.packing import decide_packing, step_tokens

GIB = 1024**3
CUDA_CONTEXT_BYTES = 512 * 1024**2  # CUDA context, cuBLAS workspace and allocator slack
ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class PastJob:
    """One finished job, as the throughput history keeps it."""

    tokens: int
    seconds: float  # wall time, start to finish
    train_seconds: float | None = None  # the trainer's own runtime within it


def train_lengths(lengths: list[int], config: TrainingConfig, has_validation_file: bool) -> list[int]:
    """The records the trainer trains on (the hold-out split removed), each cut at ``max_length``."""
    kept = list(lengths)
    if config.validation_split and not has_validation_file and len(kept) > 1:
        held = math.ceil(config.validation_split * len(kept))  # datasets' train_test_split rounds the test side up
        kept = kept[: len(kept) - held]  # which ones are held is random; their mean length is the same in expectation
    return [min(n, config.max_length) for n in kept]


def packed_sequences(lengths: list[int], capacity: int) -> int:
    """How many sequences of ``capacity`` tokens the records fill, packed first-fit decreasing."""
    bins: list[int] = []
    for n in sorted(lengths, reverse=True):
        for i, free in enumerate(bins):
            if n <= free:
                bins[i] -= n
                break
        else:
            bins.append(capacity - n)
    return len(bins)


def optimizer_steps(sequences: int, config: TrainingConfig) -> int:
    """Optimizer steps as transformers' ``Trainer`` counts them for ``sequences`` rows on one device."""
    if config.max_steps and config.max_steps > 0:
        return config.max_steps
    batches = math.ceil(sequences / config.per_device_train_batch_size)
    accum = config.gradient_accumulation_steps
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    return math.ceil(config.num_train_epochs * per_epoch)


def fit_seconds(history: list[PastJob], tokens: int, default_rate: float) -> tuple[float, dict[str, Any]]:
    """Wall seconds for ``tokens`` trained tokens, and how the figure was reached."""
    runs = [r for r in history if r.tokens > 0 and r.seconds > 0]
    if not runs:
        return tokens / default_rate, {"source": "default", "tokens_per_second": default_rate, "jobs": 0}
    timed = [r for r in runs if r.train_seconds and 0 < r.train_seconds <= r.seconds]
    if timed:  # each job splits into a fixed part (start, load, evaluate, publish) and tokens at the trainer's speed
        fixed = median(r.seconds - float(r.train_seconds or 0) for r in timed)
        rate = sum(r.tokens for r in timed) / sum(float(r.train_seconds or 0) for r in timed)  # weighted by tokens
        basis = {
            "source": "history",
            "jobs": len(timed),
            "fit": "fixed + tokens / rate",
            "fixed_seconds": round(fixed, 2),
            "tokens_per_second": round(rate, 1),
        }
        return fixed + tokens / rate, basis
    sizes = {r.tokens for r in runs}
    if len(sizes) >= 2:
        n = len(runs)
        mx = sum(r.tokens for r in runs) / n
        my = sum(r.seconds for r in runs) / n
        sxx = sum((r.tokens - mx) ** 2 for r in runs)
        slope = sum((r.tokens - mx) * (r.seconds - my) for r in runs) / sxx
        fixed = my - slope * mx
        if slope > 0 and fixed >= 0:
            return fixed + slope * tokens, {
                "source": "history",
                "jobs": n,
                "fit": "fixed + tokens / rate",
                "fixed_seconds": round(fixed, 2),
                "tokens_per_second": round(1 / slope, 1),
            }
    rate = median(r.tokens / r.seconds for r in runs)
    return tokens / rate, {
        "source": "history",
        "jobs": len(runs),
        "fit": "tokens / rate",
        "tokens_per_second": round(rate, 1),
    }


def _dims(model: dict[str, Any]) -> dict[str, int]:
    cfg = model.get("text_config") or model  # multimodal configs keep the language model's under text_config
    h = int(cfg["hidden_size"])
    heads = int(cfg.get("num_attention_heads") or 1)
    hd = int(cfg.get("head_dim") or h // heads)
    return {
        "h": h,
        "layers": int(cfg["num_hidden_layers"]),
        "inter": int(cfg.get("intermediate_size") or 4 * h),
        "vocab": int(cfg.get("vocab_size") or 32000),
        "q": heads * hd,
        "heads": heads,
        "head_dim": hd,
        "kv": int(cfg.get("num_key_value_heads") or heads) * hd,
        "tied": int(bool(cfg.get("tie_word_embeddings", model.get("tie_word_embeddings", False)))),
    }


def _linear_shapes(d: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection of one decoder layer."""
    h, inter = d["h"], d["inter"]
    return {
        "q_proj": (h, d["q"]),
        "k_proj": (h, d["kv"]),
        "v_proj": (h, d["kv"]),
        "o_proj": (d["q"], h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }


def parameter_count(model: dict[str, Any]) -> int:
    d = _dims(model)
    per_layer = sum(i * o for i, o in _linear_shapes(d).values()) + 2 * d["h"]
    return d["layers"] * per_layer + d["vocab"] * d["h"] * (2 - d["tied"]) + d["h"]


def activation_bytes(model: dict[str, Any], config: TrainingConfig, *, liger: bool = False) -> int:
    """Bytes one token keeps for the backward pass in one decoder layer (PEFT LoRA, SDPA attention).

    Counted tensor by tensor from what autograd saves (checked on a CPU by ``tests/unit/test_estimate_activations``
    for two shapes), in the two ways a run computes:
    - **16-bit** (bf16/fp16 under autocast, and every quantized run): each RMSNorm keeps an fp32 copy of its input;
      the q/k/v and gate/up projections each keep their 16-bit input; rotary keeps cos and sin; attention keeps q,
      k, v, its output and its log-sum-exp; the MLP keeps the gate and up outputs, the SiLU and the down
      projection's input. Liger's kernels keep each norm's input in 16 bits and recompute the SiLU.
    - **fp32**: the same tensors at 4 bytes, the norms without a copy.
    LoRA dropout (``lora_dropout > 0``) keeps the dropped input of every adapted projection, in the adapter's
    dtype (fp32 unless the base is quantized), and its mask.
    """
    d = _dims(model)
    h, q, kv, inter = d["h"], d["q"], d["kv"], d["inter"]
    head_dim, heads = d["head_dim"], d["heads"]
    shapes = _linear_shapes(d)
    targets = set(shapes) if config.lora.target_modules == "all-linear" else set(config.lora.target_modules)
    adapted_inputs = sum(i for name, (i, _) in shapes.items() if name in targets)
    rank = 2 * config.lora.r * len(targets & set(shapes))  # each adapter's down-projected rows
    half = _half(config)
    if half:
        per = 18 * h + 6 * q + 4 * kv + 8 * inter + 4 * head_dim + 4 * heads + rank
        if liger:
            per -= 4 * h + 2 * inter
        adapter = 2 if config.quantization else 4  # TRL keeps a quantized model's adapters in bf16
    else:
        per = 16 * h + 8 * q + 8 * kv + 16 * inter + 8 * head_dim + 2 * rank
        adapter = 4
    if config.lora.lora_dropout > 0:
        per += (adapter + 1) * adapted_inputs  # the dropped input and its one-byte mask
    return per


def _half(config: TrainingConfig) -> bool:
    return bool(config.bf16 or config.fp16 or config.quantization)


def head_mode(config: TrainingConfig, *, liger: bool) -> str:
    """How the training loss meets the LM head: TRL's chunked log-prob head (SFT under Liger, whose own fused
    cross-entropy TRL turns off), sage-ft's head at trained positions in chunks (SFT otherwise), or the model's own
    full logits (preference training)."""
    if config.method != "sft":
        return "full"
    return "chunked" if liger else "selective"


HEAD_CHUNK_BYTES = 1 << 30  # sage_ft.training.selective_head.chunk_rows' largest chunk, reached on GPUs of 16 GiB+
TRL_TILE = (4096, 32768)  # trl.kernels.chunked_logprob: tokens x vocabulary entries per projection tile


def logits_bytes(model: dict[str, Any], config: TrainingConfig, tokens: int, *, liger: bool) -> int:
    """Peak bytes of the logits (or the head's working tiles) and their gradient for ``tokens`` tokens in a step."""
    d = _dims(model)
    vocab, h = d["vocab"], d["h"]
    mode = head_mode(config, liger=liger)
    if mode == "chunked":  # a 16-bit tile forward and one backward, and the hidden states' fp32 gradient
        return min(tokens, TRL_TILE[0]) * min(vocab, TRL_TILE[1]) * 2 * 2 + tokens * h * 4
    if mode == "selective":  # fp32 logits, their gradient and the log-softmax of one chunk (12 bytes an entry)
        return min(tokens * vocab * 12, HEAD_CHUNK_BYTES)
    return tokens * vocab * (10 if _half(config) else 8)  # 16-bit logits, their fp32 copy and its gradient


def peak_memory(
    model: dict[str, Any], config: TrainingConfig, sequence_tokens: int, *, liger: bool = False, rows: int = 0
) -> dict[str, Any]:
    """Peak accelerator bytes for one training step of ``per_device_train_batch_size`` rows of ``sequence_tokens``
    (a packed row is ``max_length`` long), with the parts that make it up. ``liger``: the worker trains SFT with
    Liger's kernels (CUDA workers with liger-kernel installed, as the GPU image is)."""
    d = _dims(model)
    shapes = _linear_shapes(d)
    linear = d["layers"] * sum(i * o for i, o in shapes.values())
    other = d["vocab"] * d["h"] * (2 - d["tied"]) + d["layers"] * 2 * d["h"] + d["h"]
    half = _half(config)
    if config.load_in_4bit:
        linear_bytes = linear * (4.127 if config.bnb_4bit_use_double_quant else 4.5) / 8  # NF4 plus block scales
    elif config.load_in_8bit:
        linear_bytes = linear * 1.0 + d["layers"] * sum(o for _, o in shapes.values()) * 4  # int8, fp32 row scales
    else:
        linear_bytes = linear * (2 if config.bf16 or config.fp16 else 4)
    weights = linear_bytes + other * (2 if half else 4)
    targets = set(shapes) if config.lora.target_modules == "all-linear" else set(config.lora.target_modules)
    lora_params = d["layers"] * sum(config.lora.r * (i + o) for name, (i, o) in shapes.items() if name in targets)
    state = 2 if "8bit" in config.optim else 8  # Adam's two moments, fp32 or 8-bit
    lora_bytes = lora_params * (4 + 4 + state)  # fp32 weights and gradients, optimizer state
    tokens = (rows or config.per_device_train_batch_size) * sequence_tokens  # rows: RFT's prompts x samples
    per_layer = activation_bytes(model, config, liger=liger and config.method == "sft")
    if config.gradient_checkpointing:  # each layer's input, then one layer recomputed at a time
        activations = tokens * (d["layers"] * d["h"] * (2 if half else 4) + per_layer)
    else:
        activations = tokens * d["layers"] * per_layer
    logits = logits_bytes(model, config, tokens, liger=liger)
    total = int(weights + lora_bytes + activations + logits + CUDA_CONTEXT_BYTES)
    breakdown = {
        "weights": int(weights),
        "lora_and_optimizer": int(lora_bytes),
        "activations": int(activations),
        "logits": int(logits),
        "cuda_context": CUDA_CONTEXT_BYTES,
    }
    return {
        "peak_memory_bytes": total,
        "parameters": linear + other,
        "trainable_parameters": lora_params,
        "memory_breakdown": breakdown,
    }


def estimate(
    lengths: list[int],
    config: TrainingConfig,
    *,
    has_validation_file: bool,
    model: dict[str, Any] | None,
    history: list[PastJob],
    default_rate: float,
    liger: bool = False,
) -> dict[str, Any]:
    """The ``estimate`` object of ``fine_tuning.job.estimate``."""
    kept = train_lengths(lengths, config, has_validation_file)
    cut = sum(1 for n in lengths if n > config.max_length)
    # reinforcement: each prompt is answered num_generations times, each answer up to max_completion_length tokens,
    # and the step trains on every prompt + answer (an upper bound: answers often stop sooner)
    samples = config.rft.num_generations if config.method == "rft" else 1
    trained = [n + config.rft.max_completion_length for n in kept] if samples > 1 else kept
    per_epoch = sum(trained) * samples
    batch_rows = config.per_device_train_batch_size
    packing = decide_packing(config.packing, kept, config.max_length, batch_rows, config.method)
    rows = packed_sequences(kept, config.max_length) if packing.layout == "packed" else len(kept)
    steps = optimizer_steps(rows, config)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    # max_steps: as many passes over the rows as the steps take
    epochs = steps * batch / max(rows, 1) if config.max_steps and config.max_steps > 0 else config.num_train_epochs
    tokens = int(per_epoch * epochs)
    seconds, basis = fit_seconds(history, tokens, default_rate)
    out: dict[str, Any] = {
        "tokens": tokens,
        "tokens_per_epoch": per_epoch,
        "records": len(kept),
        "sequences_per_epoch": rows,
        "steps": steps,
        "epochs": round(epochs, 3),
        "batch_size": batch,
        "max_length": config.max_length,
        "packing": packing.layout,
        "packing_reason": packing.reason,
        "truncated": cut,
        "truncated_share": round(cut / len(lengths), 4) if lengths else 0.0,
        "seconds": round(seconds, 1),
        "seconds_basis": basis,
    }
    if samples > 1:
        rollouts = int(len(kept) * epochs)
        out.update(rollouts=rollouts, samples_per_rollout=samples, samples=rollouts * samples, tokens_upper_bound=True)
    seq = math.ceil(step_tokens(packing, trained, config.max_length, batch_rows) / batch_rows)  # the fullest step's
    if model is None:
        reason = (
            "the model's config.json is not on this installation (neither under the models root nor in the Hugging "
            "Face cache); no memory estimate"
        )
        out.update(peak_memory_bytes=None, memory_basis={"reason": reason})
        return out
    out.update(peak_memory(model, config, seq, liger=liger, rows=batch_rows * samples))
    out["memory_basis"] = {
        "sequence_tokens": seq,
        "batch": config.per_device_train_batch_size,
        "quantization": config.quantization or "none",
        "lora_rank": config.lora.r,
        "lora_dropout": config.lora.lora_dropout,
        "gradient_checkpointing": config.gradient_checkpointing,
        "packing": packing.layout,
        "liger": liger and config.method == "sft",
        "lm_head": head_mode(config, liger=liger),
    }
    return out
