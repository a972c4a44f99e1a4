from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sage_ft import ConfigError, LoRAConfig, PresetConfigs, TrainingConfig
from sage_ft.presets import Accelerator


def test_documented_defaults() -> None:
    cfg = TrainingConfig()
    assert cfg.model_name == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert (cfg.lora.r, cfg.lora.lora_alpha, cfg.lora.lora_dropout) == (8, 16, 0.05)
    assert cfg.train_on_prompt is False
    assert isinstance(cfg.lora, LoRAConfig)


def test_documented_python_api_example() -> None:
    config = PresetConfigs.rtx_3060()
    config.model_name = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    config.data_path = "./my_data.json"
    config.output_dir = "./output"
    assert config.load_in_8bit and config.data_path == "./my_data.json"
    config = TrainingConfig(
        model_name="Qwen/Qwen2.5-Coder-7B-Instruct",
        data_path="./data.json",
        output_dir="./output",
        num_train_epochs=3,
        learning_rate=1e-4,
        load_in_8bit=True,
        lora=LoRAConfig(r=16, lora_alpha=32),
    )
    assert config.lora.r == 16 and config.quantization == "8bit"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"load_in_4bit": True, "load_in_8bit": True}, ["load_in_4bit", "load_in_8bit"]),
        ({"fp16": True, "bf16": True}, ["fp16", "bf16"]),
    ],
)
def test_rejected_combinations(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        TrainingConfig(**kwargs)
    assert all(w in str(err.value) for w in words)
    with pytest.raises(ConfigError) as err2:
        TrainingConfig.from_dict(kwargs)
    assert all(w in str(err2.value) for w in words)


def test_contradiction_rejected_on_assignment() -> None:
    cfg = PresetConfigs.rtx_3060()
    with pytest.raises(ValidationError, match="mutually exclusive"):
        cfg.load_in_4bit = True
    with pytest.raises(ValidationError, match="mutually exclusive"):
        cfg.bf16 = True


def test_unknown_and_invalid_fields_are_named() -> None:
    with pytest.raises(ConfigError, match="learning_rat"):
        TrainingConfig.from_dict({"learning_rat": 0.1})
    with pytest.raises(ConfigError, match=r"lora\.r"):
        TrainingConfig.from_dict({"lora": {"r": 0}})


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = PresetConfigs.minimal(data_path="d.jsonl", lora={"r": 12}, report_to="none", validation_split=0.1)
    path = cfg.save(tmp_path / f"cfg{suffix}")
    loaded = TrainingConfig.load(path)
    assert loaded == cfg
    assert isinstance(loaded.lora, LoRAConfig) and loaded.lora.r == 12 and loaded.lora.lora_alpha == 8
    assert loaded.report_to == []


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        TrainingConfig.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_train_epochs": -1}))
    with pytest.raises(ConfigError, match="num_train_epochs"):
        TrainingConfig.load(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainingConfig.load(tmp_path / "list.yaml")


PRESET_TABLE = {
    # name: (8bit, 4bit, max_length, batch, grad_acc, grad_ckpt, optim, r, alpha)
    "rtx_3060": (True, False, 1024, 1, 16, True, "paged_adamw_8bit", 8, 16),
    "rtx_4090": (False, False, 2048, 4, 4, False, "adamw_torch", 8, 16),
    "a100": (False, False, 4096, 8, 2, False, "adamw_torch", 8, 16),
    "minimal": (False, True, 512, 1, 32, True, "paged_adamw_8bit", 4, 8),
}


@pytest.mark.parametrize("name", list(PRESET_TABLE))
def test_presets_match_the_table(name: str) -> None:
    cfg = getattr(PresetConfigs, name)()
    fields = (
        "load_in_8bit",
        "load_in_4bit",
        "max_length",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "gradient_checkpointing",
        "optim",
    )
    got = (*(getattr(cfg, f) for f in fields), cfg.lora.r, cfg.lora.lora_alpha)
    assert got == PRESET_TABLE[name]
    assert cfg.preset == name


def test_preset_precisions() -> None:
    assert PresetConfigs.rtx_3060().fp16 and PresetConfigs.minimal().fp16
    assert PresetConfigs.a100().bf16
    rtx = PresetConfigs.rtx_4090()
    assert rtx.bf16 != rtx.fp16  # bf16 where supported, fp16 otherwise
    minimal = PresetConfigs.minimal()
    assert minimal.bnb_4bit_quant_type == "nf4" and minimal.bnb_4bit_use_double_quant
    cpu = PresetConfigs.cpu()
    assert not (cpu.fp16 or cpu.bf16 or cpu.load_in_4bit or cpu.load_in_8bit)
    assert cpu.optim == "adamw_torch" and cpu.max_length <= 512


@pytest.mark.parametrize(
    ("acc", "expected"),
    [
        (Accelerator("cpu", "cpu"), "cpu"),
        (Accelerator("cuda", "RTX 2060", 6 * 1024**3), "minimal"),
        (Accelerator("cuda", "RTX 3060", 12 * 1024**3), "rtx_3060"),
        (Accelerator("cuda", "RTX 4090", 24 * 1024**3, bf16=True), "rtx_4090"),
        (Accelerator("cuda", "A100", 80 * 1024**3, bf16=True), "a100"),
    ],
)
def test_auto_choice_explains_itself(acc: Accelerator, expected: str) -> None:
    choice = PresetConfigs.choose(acc)
    assert choice.name == expected and choice.config.preset == expected
    assert acc.name in choice.reason


def test_auto_on_this_machine_is_cpu() -> None:
    cfg = PresetConfigs.auto(num_train_epochs=1)
    assert cfg.preset == "cpu" and cfg.num_train_epochs == 1


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="rtx_3060"):
        PresetConfigs.get("gtx_1080")
