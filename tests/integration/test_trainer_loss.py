"""The training loss of ``SageSFTTrainer`` (LM head at trained positions only) against the model's own loss, through
the real SFTTrainer pipeline with PEFT: the same loss and LoRA gradients within 1e-5, and the head sees only the
trained tokens. Two shapes: a padded batch on Qwen2 with a tied head, and a packed padding-free batch on Llama with
grouped-query attention, an untied head and a larger vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import Trainer

from sage_ft import TrainingConfig
from sage_ft.training import LoRATrainer
from sage_ft.training.tiny_model import build_tiny_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

SHAPES = {
    "qwen2-padded": (dict(architecture="qwen2", hidden_size=128, num_layers=2, num_heads=2), False),
    "llama-packed": (
        dict(
            architecture="llama",
            hidden_size=128,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            tie_embeddings=False,
            vocab_size=6000,
        ),
        True,
    ),
}


def lora_grads(model: Any) -> dict[str, Any]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_selective_head_loss_equals_the_models_own(shape: str, sage_home: Path, tmp_path: Path) -> None:
    knobs, packing = SHAPES[shape]
    model_dir = build_tiny_model(f"loss-{shape}", **knobs)  # type: ignore[arg-type]
    records = [
        {
            "messages": [
                {"role": "user", "content": "word " * (3 + 4 * i)},
                {"role": "assistant", "content": "answer " * (2 + 3 * (i % 3))},
            ]
        }
        for i in range(8)
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = TrainingConfig(
        model_name=str(model_dir),
        data_path=str(data),
        output_dir=str(tmp_path / "o"),
        max_length=128,
        packing=packing,
        lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
        report_to="none",
    )
    trainer, _ = LoRATrainer(cfg).build_trainer()
    model = trainer.model.train()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(min(4, len(trainer.train_dataset)))])
    assert ("cu_seq_lens_q" in batch) == packing and ("attention_mask" in batch) != packing
    trained = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < trained < batch["labels"][:, 1:].numel()  # prompts are in the batch and carry no loss

    head_rows: list[int] = []
    head = model.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, args, _o: head_rows.append(args[0].shape[:-1].numel()))
    ours = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(trained))
    ours.backward()
    ours_grads = lora_grads(model)
    model.zero_grad()
    assert head_rows == [trained]  # no logits for a prompt, padding or boundary token
    own = Trainer.compute_loss(trainer, model, dict(batch), num_items_in_batch=torch.tensor(trained))
    own.backward()
    hook.remove()
    assert head_rows[1] == batch["labels"].numel()  # the model's own forward computes the head everywhere
    torch.testing.assert_close(ours, own, atol=1e-5, rtol=1e-5)
    own_grads = lora_grads(model)
    assert own_grads.keys() == ours_grads.keys() and own_grads
    for name, grad in own_grads.items():
        torch.testing.assert_close(ours_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
