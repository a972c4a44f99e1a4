"""Packed training keeps sequences apart: through the real SFTTrainer pipeline (TRL's best-fit packing and
padding-free collator, PEFT, our attention), each packed sequence's logits equal those of the same sequence run
alone, within 1e-4 in fp32. Two model shapes: Qwen2 with multi-head attention, and Llama with grouped-query
attention and an untied head."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft import TrainingConfig
from sage_ft.training import LoRATrainer
from sage_ft.training.attention import VARLEN
from sage_ft.training.tiny_model import build_tiny_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "seven", "green", "light", "north"]


def records(n: int) -> list[dict[str, Any]]:
    """Conversations of clearly different lengths, so several of them share a packed row."""
    out = []
    for i in range(n):
        q = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + 5 * (i % 4)))
        a = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(2 + 7 * (i % 3)))
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return out


SHAPES = {
    "qwen2-mha": dict(architecture="qwen2", hidden_size=128, num_layers=2, num_heads=2),
    "llama-gqa-untied": dict(architecture="llama", hidden_size=256, num_layers=3, num_heads=4, num_kv_heads=2,
                             tie_embeddings=False),
}  # fmt: skip


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_packed_sequence_sees_only_itself(shape: str, sage_home: Path, tmp_path: Path) -> None:
    model_dir = build_tiny_model(f"packed-{shape}", **SHAPES[shape])  # type: ignore[arg-type]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(12)))
    cfg = TrainingConfig(model_name=str(model_dir), data_path=str(data), output_dir=str(tmp_path / "o"),
                         max_length=128, packing=True, per_device_train_batch_size=2, report_to="none")  # fmt: skip
    trainer, _ = LoRATrainer(cfg).build_trainer()
    model = trainer.model.eval()  # no LoRA dropout: the two passes must be comparable
    assert model.config._attn_implementation == VARLEN  # on CPU; flash-attention's varlen kernel on CUDA
    with torch.no_grad():  # a nonzero adapter, so the LoRA path is part of what is compared
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    bounds = batch["cu_seq_lens_q"].tolist()
    assert batch["input_ids"].shape[0] == 1 and len(bounds) - 1 >= 4  # two bins of several sequences, one row
    with torch.no_grad():
        packed = model(**batch).logits[0]
        worst = 0.0
        for start, end in itertools.pairwise(bounds):
            alone = model(input_ids=batch["input_ids"][:, start:end]).logits[0]
            worst = max(worst, (packed[start:end] - alone).abs().max().item())
        assert worst < 1e-4, f"a packed sequence's logits differ from the same sequence alone by {worst}"

        # the comparison can fail: one causal pass over the row lets later sequences see earlier ones
        crossing = model(input_ids=batch["input_ids"]).logits[0]
        second = slice(bounds[1], bounds[2])
        assert (crossing[second] - packed[second]).abs().max().item() > 1e-2


def test_unpacked_training_keeps_the_default_attention(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(4)))
    cfg = TrainingConfig(model_name=str(tiny_model), data_path=str(data), output_dir=str(tmp_path / "o"),
                         max_length=128, report_to="none")  # fmt: skip
    trainer, _ = LoRATrainer(cfg).build_trainer()
    assert trainer.model.config._attn_implementation == "sdpa"
