"""What serving refuses to load, and how it picks an engine, without starting anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_ft.storage.manifest import FileEntry, Manifest
from sage_ft_serving.artifacts import ArtifactError, check_safe, part_digest
from sage_ft_serving.engines import choose_engine
from sage_ft_serving.settings import ServingSettings, Settings

GOOD_CONFIG = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj"],
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": "sage-tiny",
    "auto_mapping": None,
}


def adapter_dir(tmp_path: Path, config: dict, weights: str = "adapter_model.safetensors") -> Path:
    path = tmp_path / "adapter"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / weights).write_bytes(b"\0" * 16)
    return path


def test_a_plain_lora_adapter_passes(tmp_path: Path) -> None:
    check_safe(adapter_dir(tmp_path, GOOD_CONFIG), "adapter")


@pytest.mark.parametrize(
    ("config", "weights", "message"),
    [
        ({**GOOD_CONFIG, "auto_map": {"AutoModel": "evil.Model"}}, "adapter_model.safetensors", "auto_map"),
        ({**GOOD_CONFIG, "auto_mapping": {"base_model_class": "Evil"}}, "adapter_model.safetensors", "auto_mapping"),
        (GOOD_CONFIG, "adapter_model.bin", "only safetensors"),
    ],
)
def test_unsafe_adapters_are_refused_by_name(tmp_path: Path, config: dict, weights: str, message: str) -> None:
    path = adapter_dir(tmp_path, config, weights)
    if weights != "adapter_model.safetensors":
        (path / "adapter_model.safetensors").write_bytes(b"\0")
    with pytest.raises(ArtifactError, match=message):
        check_safe(path, "adapter")


def test_merged_weights_asking_for_custom_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "merged"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"\0")
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2", "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ArtifactError, match="auto_map"):
        check_safe(path, "merged")


def test_the_cache_key_follows_the_part_not_the_whole_manifest() -> None:
    adapter = {"adapter/a.safetensors": FileEntry(4, "aa")}
    before = Manifest(name="m", base_model="b", files=adapter)
    merged = Manifest(name="m", base_model="b", files={**adapter, "merged/model.safetensors": FileEntry(9, "bb")})
    changed = Manifest(name="m", base_model="b", files={"adapter/a.safetensors": FileEntry(4, "cc")})
    assert part_digest(before, "adapter") == part_digest(merged, "adapter")  # a merge keeps the adapter cached
    assert part_digest(before, "adapter") != part_digest(changed, "adapter")  # new bytes, new key


def test_engine_choice(tmp_path: Path) -> None:
    missing = Settings(serving=ServingSettings(vllm_python=tmp_path / "none" / "python"))
    present_python = tmp_path / "venv" / "python"
    present_python.parent.mkdir()
    present_python.touch()
    present = Settings(serving=ServingSettings(vllm_python=present_python))
    assert choose_engine(missing) == "transformers"  # no vLLM installed: the fallback
    assert choose_engine(present) == "vllm"
    assert choose_engine(present, "transformers") == "transformers"  # per-deployment override
    assert choose_engine(Settings(serving=ServingSettings(launcher="docker", vllm_python=tmp_path))) == "vllm"
