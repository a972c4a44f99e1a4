"""Training on CPU with the offline tiny model: it learns, reports progress, quantizes, stops on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sage_ft import LoRAConfig, TrainingConfig
from sage_ft.training import LoRATrainer, RecordingCallback, TrainingCallback
from sage_ft.training.inference import generate_reply, load_for_inference

pytestmark = pytest.mark.slow


def qa_config(model: Path, data: Path, out: Path, **kw: Any) -> TrainingConfig:
    base: dict[str, Any] = dict(
        model_name=str(model),
        data_path=str(data),
        output_dir=str(out),
        num_train_epochs=20,
        learning_rate=3e-3,
        per_device_train_batch_size=4,
        max_length=128,
        logging_steps=5,
        save_steps=50,
        warmup_ratio=0.0,
        lora=LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0),
    )
    base.update(kw)
    return TrainingConfig(**base)


@pytest.fixture(scope="module")
def trained(tiny_model: Path, qa_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    rec = RecordingCallback()
    out = tmp_path_factory.mktemp("learn")
    result = LoRATrainer(qa_config(tiny_model, qa_file, out), callbacks=[rec]).train()
    return result, rec


def test_loss_falls_by_half_and_answers_are_learned(trained: tuple[Any, Any], qa_records: list[dict]) -> None:
    result, rec = trained
    losses = rec.losses
    assert losses[0] == result.losses[0]  # the first logged value (step 1)
    assert losses[-1] <= 0.5 * losses[0], losses
    model, tokenizer = load_for_inference(result.adapter_dir)
    answers = [
        generate_reply(model, tokenizer, [{"role": "user", "content": r["question"]}], max_new_tokens=16)
        for r in qa_records
    ]
    correct = sum(a == r["answer"] for a, r in zip(answers, qa_records, strict=True))
    assert correct >= 0.9 * len(qa_records), list(zip(answers, qa_records, strict=True))


def test_untrained_base_does_not_answer(tiny_model: Path, qa_records: list[dict]) -> None:
    """The control for the test above: without the adapter the same questions get no trained answer."""
    model, tokenizer = load_for_inference(tiny_model)
    answers = [
        generate_reply(model, tokenizer, [{"role": "user", "content": r["question"]}], max_new_tokens=8)
        for r in qa_records[:5]
    ]
    assert not any(a == r["answer"] for a, r in zip(answers, qa_records, strict=False))


def test_progress_events_and_artifacts(trained: tuple[Any, Any]) -> None:
    result, rec = trained
    kinds = [e.kind for e in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "checkpoint" in kinds
    logs = [e for e in rec.events if e.kind == "log"]
    assert all(e.total_steps == result.total_steps == 100 for e in logs)
    last = logs[-1]
    assert last.step == 100 and last.learning_rate is not None and last.tokens_per_second and last.tokens_seen > 0
    assert [e.step for e in logs][:3] == [1, 5, 10] and logs[1].eta_seconds is not None
    ckpt = next(e for e in rec.events if e.kind == "checkpoint")
    assert ckpt.step == 50 and Path(ckpt.checkpoint or "").joinpath("trainer_state.json").exists()
    out = result.output_dir
    assert list((out / "logs").glob("events.out.tfevents.*")), "TensorBoard logs in <output_dir>/logs"
    adapter = result.adapter_dir
    assert (adapter / "adapter_model.safetensors").exists() and not list(adapter.glob("*.bin"))
    assert (adapter / "chat_template.jinja").exists() or "chat_template" in (
        adapter / "tokenizer_config.json"
    ).read_text()
    meta = json.loads((adapter / "sage_ft.json").read_text())
    assert meta["global_step"] == 100 and TrainingConfig.load(out / "training_config.yaml").learning_rate == 3e-3


class StopAt(TrainingCallback):
    """Asks to stop once ``step`` steps have ended (should_stop is asked once per step)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.calls = 0

    def should_stop(self) -> bool:
        self.calls += 1
        return self.calls >= self.step


def test_stop_request_checkpoints_and_stops(tiny_model: Path, qa_file: Path, tmp_path: Path) -> None:
    cfg = qa_config(tiny_model, qa_file, tmp_path, num_train_epochs=5, report_to="none")
    result = LoRATrainer(cfg, callbacks=[StopAt(3)]).train()
    assert result.stopped_early and result.global_step == 3 and result.adapter_dir is None
    assert (tmp_path / "checkpoints" / "checkpoint-3" / "trainer_state.json").exists()


@pytest.mark.parametrize(("bits", "layer"), [("4", "Linear4bit"), ("8", "Linear8bitLt")])
def test_quantized_training_produces_loadable_adapter(
    tiny_model: Path, qa_file: Path, tmp_path: Path, bits: str, layer: str
) -> None:
    quant = {"load_in_4bit": bits == "4", "load_in_8bit": bits == "8"}
    cfg = qa_config(tiny_model, qa_file, tmp_path, num_train_epochs=2, gradient_checkpointing=True, **quant)
    trainer = LoRATrainer(cfg)
    sft, _ = trainer.build_trainer()
    assert any(type(m).__name__ == layer for m in sft.model.modules()), f"base is not {bits}-bit"
    result = trainer.train()
    assert result.global_step == 10 and result.losses[-1] < result.losses[0]
    from safetensors.torch import load_file

    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and all(torch.isfinite(t).all() for t in lora_b)
    assert any(t.abs().sum() > 0 for t in lora_b), "lora_B starts at zero; training must have moved it"
    model, tokenizer = load_for_inference(result.adapter_dir)
    assert isinstance(generate_reply(model, tokenizer, [{"role": "user", "content": "hi"}], max_new_tokens=4), str)


def test_validation_report_uses_the_model_tokenizer(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "word " * 300}) + "\n" + json.dumps({"question": "q?", "answer": "a."}) + "\n")
    trainer = LoRATrainer(TrainingConfig(model_name=str(tiny_model), data_path=str(data), max_length=64))
    report = trainer.validate_data().to_dict()
    tok = trainer.tokenizer
    short = tok.apply_chat_template(
        [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a."}], tokenize=False
    ).rstrip()
    assert report["tokens"]["exact"] is True and report["tokens"]["min"] == len(tok(short).input_ids)
    assert report["tokens"]["max"] > 64 and report["truncated"] == 1 and report["truncated_share"] == 0.5
    assert report["formats"] == {"text": 1, "qa": 1}


def test_wandb_offline_run_is_recorded(tiny_model: Path, qa_file: Path, tmp_path: Path, wandb_offline: Path) -> None:
    cfg = qa_config(tiny_model, qa_file, tmp_path / "out", num_train_epochs=1, report_to=["wandb"], run_name="t")
    result = LoRATrainer(cfg).train()
    runs = list(wandb_offline.glob("offline-run-*"))
    assert result.global_step == 5 and len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its logged history"
    assert not (tmp_path / "out" / "logs").exists(), "tensorboard not requested"


def test_cpu_loss_path_computes_trl_objective(tiny_model: Path, qa_file: Path, tmp_path: Path) -> None:
    """Off CUDA we use the model's own loss instead of TRL's chunked head: it must be the same number."""
    from trl import SFTTrainer

    cfg = qa_config(tiny_model, qa_file, tmp_path, lora=LoRAConfig(r=8, lora_alpha=16, lora_dropout=0.0))
    trainer, _ = LoRATrainer(cfg).build_trainer()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    n_items = (batch["labels"][:, 1:] != -100).sum()
    trainer.model.train()
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n_items)
        trl_loss = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch), num_items_in_batch=n_items)
    assert type(trainer).compute_loss is not SFTTrainer.compute_loss
    torch.testing.assert_close(ours, trl_loss, atol=1e-4, rtol=1e-4)
