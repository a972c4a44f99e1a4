"""The fused training ops inside the real training pipeline (``LoRATrainer.build_trainer``: TRL, PEFT, a tiny model
on disk): the training loss and every LoRA gradient equal those of PEFT's and the model's own modules within 1e-5,
at two shapes (Qwen2 with projection biases, rank 8, padded; Llama with grouped-query attention, an untied head,
rank 16 and a scaling of 0.5, packed). The fused path is the one taken (its autograd nodes are in the graph), and the
cases it must leave alone are left to PEFT: dropout, a disabled adapter (DPO's reference), autocast."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft import TrainingConfig
from sage_ft.training import LoRATrainer
from sage_ft.training.fused import ROTARY_MODULES, fuse_training_ops
from sage_ft.training.tiny_model import build_tiny_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

SHAPES = {
    "qwen2-r8-padded": (
        dict(architecture="qwen2", hidden_size=128, num_layers=2, num_heads=2),
        dict(r=8, lora_alpha=16),
        False,
    ),
    "llama-gqa-r16-packed": (
        dict(
            architecture="llama",
            hidden_size=128,
            num_layers=3,
            num_heads=2,
            num_kv_heads=1,
            tie_embeddings=False,
            vocab_size=3000,
        ),
        dict(r=16, lora_alpha=8),
        True,
    ),
}


def _trainer(tmp_path: Path, knobs: dict[str, Any], lora: dict[str, Any], packing: bool) -> Any:
    model_dir = build_tiny_model(f"fused-{knobs['architecture']}-{knobs['num_layers']}", **knobs)
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
        lora={**lora, "lora_dropout": 0.0},
        report_to="none",
    )
    trainer, _ = LoRATrainer(cfg).build_trainer()
    with torch.no_grad():  # lora_B starts at zero; give the adapter a real contribution to differentiate
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return trainer


def _unfuse(model: Any, originals: dict[str, Any]) -> None:
    for module in model.modules():
        vars(module).pop("forward", None)
    for family, function in originals.items():
        importlib.import_module(f"transformers.models.{family}.modeling_{family}").apply_rotary_pos_emb = function


def _loss_and_grads(trainer: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=(batch["labels"][:, 1:] != -100).sum())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _node_names(tensor: Any) -> set[str]:
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fused_training_equals_peft_and_the_models_own(shape: str, sage_home: Path, tmp_path: Path) -> None:
    knobs, lora, packing = SHAPES[shape]
    originals = {
        f: importlib.import_module(f"transformers.models.{f}.modeling_{f}").apply_rotary_pos_emb for f in ROTARY_MODULES
    }
    trainer = _trainer(tmp_path, knobs, lora, packing)
    model = trainer.model.train()
    layers = knobs["num_layers"]
    # build_trainer fused them: re-fusing finds every LoRA linear (7 a layer), 2 norms a layer plus the final one
    assert fuse_training_ops(model) == {"lora": 7 * layers, "rms_norm": 2 * layers + 1, "rotary": len(ROTARY_MODULES)}
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(min(4, len(trainer.train_dataset)))])
    assert ("cu_seq_lens_q" in batch) == packing

    fused_loss, fused_grads = _loss_and_grads(trainer, batch)
    names = _node_names(trainer.compute_loss(model, dict(batch)))
    assert {"LoRALinearFunctionBackward", "RMSNormFunctionBackward", "RotaryFunctionBackward"} <= names
    keys = set(model.state_dict())
    _unfuse(model, originals)
    assert not {"LoRALinearFunctionBackward", "RMSNormFunctionBackward"} & _node_names(
        trainer.compute_loss(model, dict(batch))
    )
    plain_loss, plain_grads = _loss_and_grads(trainer, batch)

    assert set(model.state_dict()) == keys  # the adapter's parameters and names are PEFT's own
    torch.testing.assert_close(fused_loss, plain_loss, atol=1e-5, rtol=1e-5)
    assert fused_grads.keys() == plain_grads.keys() and len(fused_grads) == 2 * 7 * layers
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name  # every adapter matrix gets a gradient to compare
        torch.testing.assert_close(fused_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_cases_the_fused_path_leaves_to_peft(sage_home: Path, tmp_path: Path) -> None:
    knobs, lora, _ = SHAPES["qwen2-r8-padded"]
    trainer = _trainer(tmp_path, knobs, lora, False)
    model = trainer.model.train()
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, knobs["hidden_size"], requires_grad=True)
    assert type(q_proj(x).grad_fn).__name__ == "LoRALinearFunctionBackward"

    with model.disable_adapter():  # DPO's reference model: the base layer alone
        torch.testing.assert_close(q_proj(x), q_proj.base_layer(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: PEFT's forward under autocast
        assert type(q_proj(x).grad_fn).__name__ != "LoRALinearFunctionBackward"
    q_proj.lora_dropout["default"] = torch.nn.Dropout(0.5).train()
    assert type(q_proj(x).grad_fn).__name__ != "LoRALinearFunctionBackward"  # dropout: PEFT's forward
