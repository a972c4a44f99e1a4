"""The three batch layouts through the real trainer, with the defaults a user gets and with each knob:

- ``packing`` left at ``auto`` on records of varied length: padding-free. Each step's records lie end to end in one
  row with their boundaries and no attention mask, there is no padding, and the run has exactly the steps a padded
  run has (the schedule a user asked for), unlike ``packing=true``, whose rows of ``max_length`` hold several records.
- ``packing=false`` on varied lengths: padded, in batches grouped by length, so it pads less than random batches;
  under Liger (CUDA) padded to a multiple of 64. On uniform lengths: padded, plain random batches.
Two shapes of data and config: short records with a small batch and a long max_length; longer records with a
larger batch and a max_length that cuts some of them."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from sage_ft import TrainingConfig
from sage_ft.training import LoRATrainer
from sage_ft.training import trainer as trainer_module

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "seven", "green", "light", "north"]


def write_records(path: Path, count: int, longest: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, longest // 3)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest)))
        lines.append(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


SHAPES = {"short-batch4": (200, 12, 4, 512), "long-batch6-cut": (240, 60, 6, 72)}  # records, longest, batch, max_length


def build(tiny_model: Path, tmp_path: Path, shape: str, **knobs: Any) -> tuple[Any, dict[str, Any]]:
    count, longest, batch, max_length = SHAPES[shape]
    data = write_records(tmp_path / f"{shape}.jsonl", count, longest, seed=len(shape))
    cfg = TrainingConfig(
        model_name=str(tiny_model),
        data_path=str(data),
        output_dir=str(tmp_path / "o"),
        per_device_train_batch_size=batch,
        max_length=max_length,
        num_train_epochs=2,
        report_to="none",
        **knobs,
    )
    trainer, bridge = LoRATrainer(cfg).build_trainer()
    return trainer, bridge.setup


def padding_share(trainer: Any) -> float:
    real = slots = 0
    for batch in trainer.get_train_dataloader():
        mask = batch.get("attention_mask")
        real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        slots += batch["input_ids"].numel()
    return 1 - real / slots


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_default_is_padding_free_with_the_steps_of_a_padded_run(
    tiny_model: Path, tmp_path: Path, shape: str
) -> None:
    count, longest, batch_size, max_length = SHAPES[shape]
    trainer, setup = build(tiny_model, tmp_path, shape)
    assert setup["layout"] == "padding_free" and setup["packing_requested"] == "auto"
    assert setup["records"] == count and setup["attention"] == "sdpa"
    padded, padded_setup = build(tiny_model, tmp_path, shape, packing=False)
    assert padded_setup["layout"] == "padded"
    rows = setup["rows_per_epoch"]  # records the cut at max_length left something to train in, as padded keeps
    assert rows == padded_setup["rows_per_epoch"] == len(padded.train_dataset) and 0 < rows <= count
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == len(padded.get_train_dataloader()) == -(-rows // batch_size)  # a padded run's steps
    for i, batch in enumerate(batches):
        assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # one row, nothing padded
        assert len(batch["cu_seq_lens_q"]) - 1 == min(batch_size, rows - batch_size * i)  # the step's records
        assert int(batch["cu_seq_lens_q"].diff().max()) <= max_length  # each cut at max_length
    packed, packed_setup = build(tiny_model, tmp_path, shape, packing=True)
    assert packed_setup["layout"] == "packed"
    if max_length > 4 * longest:  # short records: a packed row holds several, so an epoch has fewer steps
        assert packed_setup["rows_per_epoch"] < count and len(packed.get_train_dataloader()) < len(batches)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_padded_batches_group_lengths_and_pad_to_64_under_liger(
    tiny_model: Path, tmp_path: Path, shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    grouped, setup = build(tiny_model, tmp_path, shape, packing=False)
    assert setup["layout"] == "padded" and setup["packing_reason"] == "packing=false was asked for"
    assert type(grouped._get_train_sampler()).__name__ == "LengthGroupedSampler"
    monkeypatch.setattr(trainer_module, "_length_grouping", dict)  # the same run with random batches
    random_batches, _ = build(tiny_model, tmp_path, shape, packing=False)
    assert type(random_batches._get_train_sampler()).__name__ == "RandomSampler"
    assert padding_share(grouped) < padding_share(random_batches)
    monkeypatch.undo()
    lora_trainer = LoRATrainer(
        TrainingConfig(
            model_name=str(tiny_model), data_path=str(tmp_path / f"{shape}.jsonl"), packing=False, report_to="none"
        )
    )
    lora_trainer.build_datasets()
    lora_trainer._varied_lengths = True
    monkeypatch.setattr(trainer_module, "use_liger", lambda device: True)
    monkeypatch.setattr("trl.trainer.sft_config.SFTConfig.__post_init__", lambda self: None, raising=False)
    assert lora_trainer._args(False).pad_to_multiple_of == 64  # Triton compiles per shape: fewer shapes


def test_uniform_lengths_are_padded_in_random_batches(tiny_model: Path, tmp_path: Path) -> None:
    record = {"messages": [{"role": "user", "content": "x " * 80}, {"role": "assistant", "content": "y " * 80}]}
    data = tmp_path / "same.jsonl"
    data.write_text((json.dumps(record) + "\n") * 8)
    cfg = TrainingConfig(
        model_name=str(tiny_model),
        data_path=str(data),
        output_dir=str(tmp_path / "o"),
        per_device_train_batch_size=4,
        report_to="none",
    )
    trainer, bridge = LoRATrainer(cfg).build_trainer()
    assert bridge.setup["layout"] == "padded" and "no padding to save" in bridge.setup["packing_reason"]
    assert bridge.setup["attention"] is None and trainer.model.config._attn_implementation == "sdpa"
    assert type(trainer._get_train_sampler()).__name__ == "RandomSampler"
