"""Local model names, the not-found message, GPU presets on a CPU, validation data, QLoRA merge."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sage_ft import LoRATrainer, ModelNotFoundError, PresetConfigs, TrainingConfig, merge_adapter
from sage_ft.training import RecordingCallback

from .test_training import qa_config

pytestmark = pytest.mark.slow


def test_local_model_name_resolves_under_models_root(tiny_model: Path, qa_file: Path, sage_home: Path) -> None:
    assert tiny_model == sage_home / "models" / "sage-tiny"
    trainer = LoRATrainer(TrainingConfig(model_name="sage-tiny", data_path=str(qa_file)))
    assert trainer.model_path == str(tiny_model)
    assert trainer.validate_data().ok


def test_unknown_model_lists_closest_local_names(
    tiny_model: Path, qa_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGE_TRAIN_OFFLINE", "true")
    trainer = LoRATrainer(TrainingConfig(model_name="sage-tiyn", data_path=str(qa_file)))
    with pytest.raises(ModelNotFoundError) as err:
        trainer.validate_data()
    assert "'sage-tiyn'" in str(err.value) and "Closest local models: sage-tiny" in str(err.value)


def test_gpu_preset_runs_on_cpu_with_explained_fallbacks(
    tiny_model: Path, qa_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """minimal() asks for 4-bit, fp16 and paged_adamw_8bit: on a CPU it keeps 4-bit and says what it changed."""
    cfg = PresetConfigs.minimal(
        model_name=str(tiny_model),
        data_path=str(qa_file),
        output_dir=str(tmp_path),
        max_steps=3,
        gradient_accumulation_steps=1,
        report_to="none",
    )
    trainer = LoRATrainer(cfg)
    assert (trainer.runtime.fp16, trainer.runtime.optim, trainer.runtime.compute_dtype) == (
        False,
        "adamw_torch",
        "float32",
    )
    with caplog.at_level(logging.WARNING, logger="sage_ft"):
        result = trainer.train()
    assert result.global_step == 3 and result.adapter_dir is not None
    text = caplog.text
    assert "fp16 requested but unsupported on cpu" in text and "paged_adamw_8bit needs CUDA" in text


def test_validation_split_reports_eval_loss(tiny_model: Path, qa_file: Path, tmp_path: Path) -> None:
    rec = RecordingCallback()
    cfg = qa_config(
        tiny_model, qa_file, tmp_path, num_train_epochs=2, validation_split=0.2, eval_steps=4, report_to="none"
    )
    result = LoRATrainer(cfg, callbacks=[rec]).train()
    evals = [e.metrics["eval_loss"] for e in rec.events if "eval_loss" in e.metrics]
    assert result.total_steps == 8  # 16 training records after holding out 4, batch 4, 2 epochs
    assert len(evals) == 2 and evals[-1] < evals[0]


def test_qlora_adapter_merges_into_unquantized_base(tiny_model: Path, qa_file: Path, tmp_path: Path) -> None:
    cfg = qa_config(tiny_model, qa_file, tmp_path / "q", num_train_epochs=1, load_in_4bit=True, report_to="none")
    adapter = LoRATrainer(cfg).train().adapter_dir
    assert adapter is not None
    merged = merge_adapter(adapter, tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config
    from safetensors import safe_open

    with safe_open(str(merged / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"torch.float32"}
