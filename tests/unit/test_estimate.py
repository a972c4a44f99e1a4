"""The estimate's arithmetic: the hold-out split against datasets' own, parameter counts against published sizes, memory
at two architectures; steps and tokens against real jobs are in tests/integration/test_estimate.py."""

from __future__ import annotations

import math

import pytest

from sage_ft.config import LoRAConfig, TrainingConfig
from sage_ft.jobs.estimate import (
    PastJob,
    fit_seconds,
    optimizer_steps,
    packed_sequences,
    parameter_count,
    peak_memory,
    train_lengths,
)

# config.json fields of two real architectures (Hugging Face hub, Qwen/Qwen2.5-7B and meta-llama/Llama-3.2-1B)
QWEN25_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
}
LLAMA32_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}


def cfg(**values: object) -> TrainingConfig:
    return TrainingConfig(model_name="m", **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "published"), [(QWEN25_7B, 7.62e9), (LLAMA32_1B, 1.24e9)])
def test_parameter_counts_match_the_published_sizes(model: dict, published: float) -> None:
    assert parameter_count(model) == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize("n", [2, 7, 8, 20, 23])
@pytest.mark.parametrize("split", [0.1, 0.25])
def test_the_holdout_split_keeps_as_many_records_as_datasets_does(n: int, split: float) -> None:
    from datasets import Dataset

    kept = Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=split, seed=1)["train"]
    assert len(train_lengths([10] * n, cfg(validation_split=split), has_validation_file=False)) == len(kept)
    assert len(train_lengths([10] * n, cfg(validation_split=split), has_validation_file=True)) == n


@pytest.mark.parametrize(("rows", "batch", "accum", "epochs"), [(8, 4, 1, 25), (20, 8, 1, 3), (37, 2, 4, 1.5)])
def test_optimizer_steps_are_what_the_trainer_schedules(rows: int, batch: int, accum: int, epochs: float) -> None:
    batches = math.ceil(rows / batch)
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    config = cfg(per_device_train_batch_size=batch, gradient_accumulation_steps=accum, num_train_epochs=epochs)
    assert optimizer_steps(rows, config) == math.ceil(epochs * per_epoch)
    assert optimizer_steps(rows, config.update(max_steps=11)) == 11


def test_packing_fills_bins_and_never_overfills() -> None:
    assert packed_sequences([100, 100, 100, 100], 256) == 2
    assert packed_sequences([200, 60, 50, 10], 256) == 2  # 200 + 50, then 60 + 10 (60 does not fit beside 200)
    assert packed_sequences([256] * 3, 256) == 3
    assert packed_sequences([], 256) == 0


def test_truncation_cuts_each_record_at_max_length() -> None:
    assert train_lengths([10, 300, 50], cfg(max_length=128), has_validation_file=False) == [10, 128, 50]


def test_the_time_fit_separates_fixed_cost_from_speed() -> None:
    history = [PastJob(tokens=t, seconds=20 + t / 400) for t in (2_000, 8_000, 20_000)]
    seconds, basis = fit_seconds(history, 40_000, default_rate=500)
    assert seconds == pytest.approx(20 + 100, rel=1e-6)
    assert basis["fixed_seconds"] == pytest.approx(20) and basis["tokens_per_second"] == pytest.approx(400)
    one, basis = fit_seconds(history[:1], 4_000, default_rate=500)
    assert one == pytest.approx(4_000 / (2_000 / 25)) and basis["jobs"] == 1
    split = [
        PastJob(tokens=2_000, seconds=25, train_seconds=5),
        PastJob(tokens=8_000, seconds=41, train_seconds=20),
    ]
    two, basis = fit_seconds(split, 4_000, default_rate=500)  # fixed: median(20, 21); speed: median(400, 400)
    assert two == pytest.approx(20.5 + 10) and basis["jobs"] == 2
    alone, _ = fit_seconds(split[:1], 4_000, default_rate=500)  # one job with its runtime is enough to split
    assert alone == pytest.approx(20 + 10)
    none, basis = fit_seconds([], 4_000, default_rate=500)
    assert none == 8.0 and basis["source"] == "default"


@pytest.mark.parametrize("model", [QWEN25_7B, LLAMA32_1B])
def test_peak_memory_moves_with_quantization_rank_batch_and_length(model: dict) -> None:
    base = cfg(bf16=True, max_length=512, per_device_train_batch_size=1, lora=LoRAConfig(r=8))

    def peak(config: TrainingConfig, seq: int = 512) -> int:
        return int(peak_memory(model, config, seq)["peak_memory_bytes"])

    four, eight, full = peak(base.update(load_in_4bit=True)), peak(base.update(load_in_8bit=True)), peak(base)
    assert four < eight < full
    assert peak(base.update(lora=LoRAConfig(r=64))) > full
    assert peak(base.update(per_device_train_batch_size=4)) > full
    assert peak(base, 2048) > full
    assert peak(base.update(gradient_checkpointing=True)) < full
    weights = peak_memory(model, base.update(load_in_4bit=True), 512)["memory_breakdown"]["weights"]
    params = parameter_count(model)
    assert 0.5 * params < weights < 1.0 * params  # NF4 linears (~0.52 B/param) plus 16-bit embeddings


def test_qlora_7b_at_512_tokens_fits_a_small_card() -> None:
    """QLoRA's promise for a 7B model: 4-bit weights, rank 8, batch 1, 512 tokens, checkpointing: under 8 GiB."""
    config = cfg(
        load_in_4bit=True,
        fp16=True,
        gradient_checkpointing=True,
        per_device_train_batch_size=1,
        max_length=512,
        lora=LoRAConfig(r=8),
        optim="paged_adamw_8bit",
    )
    peak = peak_memory(QWEN25_7B, config, 512)["peak_memory_bytes"]
    assert 5 * 2**30 < peak < 8 * 2**30
