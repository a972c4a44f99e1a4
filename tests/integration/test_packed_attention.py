"""Rows shared by several records give the unpacked model's results, through the real SFTTrainer pipeline (TRL's
best-fit packing with ``packing=true``, or each batch end to end as the default ``auto`` does; its padding-free
collator, PEFT, our attention), for both layouts and every packed-attention backend on a CPU: per-sequence
SDPA, FlexAttention (forward only off CUDA: its kernel has no CPU backward, so the gradient test evaluates our
block mask densely instead), and torch's ``varlen_attn`` dispatch through a CPU stand-in of its kernel.

- each packed sequence's logits equal those of the same sequence run alone, within 1e-4 in fp32;
- the training loss (LM head at trained positions) and every LoRA gradient of a packed batch equal those of the
  same records in a padded batch through plain ``sdpa`` with its masks, within 1e-5.

Two model shapes: Qwen2 with multi-head attention and a tied head, and Llama with grouped-query attention and an
untied head."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attention_stand_ins import dense_flex, stand_in_kernel

from sage_ft import TrainingConfig
from sage_ft.training import LoRATrainer, attention
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
    "llama-gqa-untied": dict(
        architecture="llama", hidden_size=256, num_layers=3, num_heads=4, num_kv_heads=2, tie_embeddings=False
    ),
}
BACKENDS = ["sdpa", "flex", "varlen"]
LAYOUTS = ["packed", "padding_free"]  # rows of max_length (packing=true), or each batch in one row (the default)


@pytest.fixture
def packed_trainer(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A trainer whose batches share rows (``layout``: packed, or padding-free as the defaults give for records of
    varied length) and whose model attends through ``backend``, switched in after loading (a CPU run picks
    per-sequence SDPA); varlen through the stand-in kernel."""
    shape, backend, layout = request.param
    model_dir = build_tiny_model(f"packed-{shape}", **SHAPES[shape])  # type: ignore[arg-type]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(12)))
    cfg = TrainingConfig(
        model_name=str(model_dir),
        data_path=str(data),
        output_dir=str(tmp_path / "o"),
        max_length=128,
        per_device_train_batch_size=4,
        packing=layout == "packed" or "auto",
        lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
        report_to="none",
    )
    trainer, bridge = LoRATrainer(cfg).build_trainer()
    assert bridge.setup["layout"] == layout  # auto: padding-free, since lengths vary
    model = trainer.model
    assert model.config._attn_implementation == attention.PACKED_SDPA  # what a CPU picks
    if backend == "varlen":
        calls: list[dict[str, Any]] = []
        monkeypatch.setattr(attention, "varlen_kernel", lambda: stand_in_kernel("2.13", calls))
        trainer.varlen_calls = calls
    model.get_base_model().set_attn_implementation(attention.BACKENDS[backend])
    assert model.config._attn_implementation == attention.BACKENDS[backend]
    with torch.no_grad():  # a nonzero adapter, so the LoRA path is part of what is compared
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    yield trainer


CASES = [(shape, backend, layout) for shape in sorted(SHAPES) for backend in BACKENDS for layout in LAYOUTS]
IDS = ["-".join(case) for case in CASES]


def _batch(trainer: Any) -> dict[str, Any]:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 1 and len(batch["cu_seq_lens_q"]) - 1 >= 4  # several records in one row
    return dict(batch)


@pytest.mark.parametrize("packed_trainer", CASES, indirect=True, ids=IDS)
def test_a_packed_sequence_sees_only_itself(packed_trainer: Any) -> None:
    model = packed_trainer.model.eval()  # no LoRA dropout: the two passes must be comparable
    batch = _batch(packed_trainer)
    bounds = batch["cu_seq_lens_q"].tolist()
    with torch.no_grad():
        packed = model(**batch).logits[0]
        with attention.unpacked_attention(model):
            worst = 0.0
            for start, end in itertools.pairwise(bounds):
                alone = model(input_ids=batch["input_ids"][:, start:end]).logits[0]
                worst = max(worst, (packed[start:end] - alone).abs().max().item())
            # the comparison can fail: one causal pass over the row lets later sequences see earlier ones
            crossing = model(input_ids=batch["input_ids"]).logits[0]
    assert worst < 1e-4, f"a packed sequence's logits differ from the same sequence alone by {worst}"
    second = slice(bounds[1], bounds[2])
    assert (crossing[second] - packed[second]).abs().max().item() > 1e-2
    if hasattr(packed_trainer, "varlen_calls"):  # one kernel call per layer, each with the collator's boundaries
        layers = model.config.num_hidden_layers
        assert len(packed_trainer.varlen_calls) == layers
        assert all(c["max"] == (batch["max_length_q"],) * 2 for c in packed_trainer.varlen_calls)


def _padded(batch: dict[str, Any], pad_id: int) -> dict[str, Any]:
    """The packed row's records as a right-padded batch, one record a row, with its attention mask."""
    bounds = batch["cu_seq_lens_q"].tolist()
    spans = list(itertools.pairwise(bounds))
    width = max(end - start for start, end in spans)
    ids = torch.full((len(spans), width), pad_id)
    labels = torch.full((len(spans), width), -100)
    mask = torch.zeros((len(spans), width), dtype=torch.long)
    for row, (start, end) in enumerate(spans):
        ids[row, : end - start] = batch["input_ids"][0, start:end]
        labels[row, : end - start] = batch["labels"][0, start:end]
        mask[row, : end - start] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@pytest.mark.parametrize("packed_trainer", CASES, indirect=True, ids=IDS)
def test_packed_loss_and_lora_gradients_equal_the_unpacked_models(
    packed_trainer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FlexAttention has no backward pass on a CPU: its kernel is replaced by the dense evaluation of our block mask
    monkeypatch.setattr(attention, "_flex_function", lambda _device: dense_flex)
    model = packed_trainer.model.train()
    batch = _batch(packed_trainer)
    trained = int((batch["labels"][:, 1:] != -100).sum())
    loss = packed_trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(trained))
    loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    padded = _padded(batch, packed_trainer.processing_class.pad_token_id)
    assert int((padded["labels"][:, 1:] != -100).sum()) == trained  # the same trained tokens, laid out padded
    with attention.unpacked_attention(model):
        reference = model(**padded, num_items_in_batch=torch.tensor(trained)).loss
        reference.backward()
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    assert packed_grads
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(packed_grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)
