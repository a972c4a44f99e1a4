"""Reinforcement fine-tuning through the Python API, on CPU with the offline tiny model.

SFT first teaches each answer in two forms ("It is X." and "It might be X."), so the model samples both and its
greedy answer is one of them. RFT from that fine-tune, rewarded by a ``string_check`` grader for "might be", makes
the rewarded form the greedy one, and the reward mean in its logs rises. Around it: RFT rows are checked by line
and field before anything trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft import LoRAConfig, TrainingConfig
from sage_ft.errors import DataError
from sage_ft.training import LoRATrainer, RecordingCallback
from sage_ft.training.inference import generate_reply, load_for_inference

pytestmark = pytest.mark.slow

WORDS = ["apple river", "blue stone", "cold fire", "dark moon", "eager fox", "fast wind", "green hill", "high tower"]
QUESTIONS = [f"What is the code word number {i}?" for i in range(len(WORDS))]
HEDGE = {
    "type": "string_check",
    "name": "hedge",
    "input": "{{sample.output_text}}",
    "reference": "might be",
    "operation": "like",
}


def config(model: Path, data: Path, out: Path, **kw: Any) -> TrainingConfig:
    base: dict[str, Any] = dict(
        model_name=str(model),
        data_path=str(data),
        output_dir=str(out),
        num_train_epochs=30,
        learning_rate=3e-3,
        per_device_train_batch_size=4,
        max_length=128,
        logging_steps=2,
        save_steps=1000,
        warmup_ratio=0.0,
        report_to="none",
        lora=LoRAConfig(r=16, lora_alpha=32, lora_dropout=0.0),
    )
    base.update(kw)
    return TrainingConfig(**base)


def hedged(adapter: Path) -> list[str]:
    model, tokenizer = load_for_inference(adapter)
    return [generate_reply(model, tokenizer, [{"role": "user", "content": q}], max_new_tokens=12) for q in QUESTIONS]


@pytest.fixture(scope="module")
def both_forms(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SFT fine-tune that has seen every answer said both ways."""
    root = tmp_path_factory.mktemp("rft-sft")
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"It {form} {w}."}]}
        for q, w in zip(QUESTIONS, WORDS, strict=True)
        for form in ("is", "might be")
    ]
    data = root / "both.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = LoRATrainer(config(tiny_model, data, root / "out")).train()
    assert result.adapter_dir is not None
    return result.adapter_dir


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI's RFT rows: the prompt, and a field the grader could read."""
    path = tmp_path_factory.mktemp("rft-data") / "prompts.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}], "answer": w} for q, w in zip(QUESTIONS, WORDS, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rft_makes_the_rewarded_form_the_greedy_answer(
    tiny_model: Path, both_forms: Path, prompts: Path, tmp_path: Path
) -> None:
    before = hedged(both_forms)
    assert sum("might be" in a for a in before) <= 6, before  # the control: SFT alone does not answer that way
    rec = RecordingCallback()
    cfg = config(
        tiny_model,
        prompts,
        tmp_path / "rft",
        method="reinforcement",
        rft={"grader": HEDGE},
        init_adapter=str(both_forms),
        num_train_epochs=14,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
    )
    result = LoRATrainer(cfg, callbacks=[rec]).train()
    after = hedged(result.adapter_dir)
    assert sum("might be" in a for a in after) >= 0.9 * len(QUESTIONS), after
    assert sum(any(w in a for w in WORDS) for a in after) >= 6, after  # still the code words, now hedged
    rewards = [e.metrics["reward"] for e in rec.events if e.kind == "log" and "reward" in e.metrics]
    assert len(rewards) >= 5 and max(rewards[-3:]) > rewards[0] + 0.25, rewards
    assert all(e.metrics["grader/error_rate"] == 0 for e in rec.events if "grader/error_rate" in e.metrics)
    meta = json.loads((result.adapter_dir / "sage_ft.json").read_text())
    assert meta["method"] == "rft" and meta["config"]["rft"]["grader"]["name"] == "hedge"


@pytest.mark.parametrize(
    ("row", "field", "fragment"),
    [
        ({"answer": "x"}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "hi"}], "answer": "x"}, "messages[0].role", "unknown role"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "x"},
            "messages[1].role",
            "ends where the model's answer starts",
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, "answer", "{{item.answer}}"),
    ],
)
def test_bad_rft_rows_name_the_line_and_field(
    tiny_model: Path, tmp_path: Path, row: dict[str, Any], field: str, fragment: str
) -> None:
    good = {"messages": [{"role": "user", "content": "q"}], "answer": "x"}
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    grader = {**HEDGE, "reference": "{{item.answer}}"}
    cfg = config(tiny_model, data, tmp_path / "out", method="rft", rft={"grader": grader})
    with pytest.raises(DataError) as exc:
        LoRATrainer(cfg).build_datasets()
    assert exc.value.line == 2 and exc.value.field == field and fragment in str(exc.value), str(exc.value)
