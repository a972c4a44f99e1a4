"""The baseline every training benchmark compares against: PEFT and a hand-written torch loop, nothing else.

Padded batches (each row padded to the batch's longest), the model's own attention (SDPA) and loss, AdamW on the
LoRA parameters, gradient clipping at 1.0. On CUDA the model is loaded in bf16 and runs under bf16 autocast, as
mixed-precision training does; on a CPU in fp32. ``benchmarks/train_overhead.py`` and ``benchmarks/gpu_train.py``
both use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class BareStep:
    """One optimizer step of the bare loop: real tokens, padded slots, sum of squared sequence lengths (for the
    attention FLOPs), and the wall time at its end (after the GPU finished it)."""

    tokens: int
    slots: int
    squares: int
    ended: float


def padded_batch(rows: Sequence[dict[str, list[int]]], pad_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Token ids, labels (-100 outside the trained tokens and in the padding) and attention mask of ``rows``
    (``input_ids`` and ``assistant_masks`` each), right-padded to the longest, cut at ``max_length``."""
    width = min(max_length, max(len(r["input_ids"]) for r in rows))
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        n = min(width, len(row["input_ids"]))
        ids[j, :n] = torch.tensor(row["input_ids"][:n])
        trained = torch.tensor(row["assistant_masks"][:n]).bool()
        labels[j, :n] = torch.where(trained, ids[j, :n], -100)
        mask[j, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def load_bare_model(model_dir: Path, rank: int, alpha: int, device: str) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device)
    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora).train()


def bare_train(
    model: Any,
    batches: Iterator[dict[str, torch.Tensor]],
    steps: int,
    lr: float = 1e-4,
    on_step: Callable[[BareStep], None] | None = None,
) -> list[BareStep]:
    """``steps`` optimizer steps over ``batches``; each step's record is passed to ``on_step`` as it ends."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    out: list[BareStep] = []
    for _ in range(steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the step is done on the device, as a trainer's logging waits for it
        lengths = batch["attention_mask"].sum(1)
        step = BareStep(int(lengths.sum()), batch["input_ids"].numel(), int((lengths**2).sum()), time.perf_counter())
        out.append(step)
        if on_step is not None:
            on_step(step)
    return out
