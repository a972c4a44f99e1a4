"""Reinforcement fine-tuning's rows through the Python API: each problem is named by line and field before anything
trains. That RFT learns is shown on the whole stack (``test_dpo_stack``), where the job API, a killed worker and
vLLM serving are part of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft.errors import DataError
from sage_ft.training import LoRATrainer

from .test_dpo import config

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


@pytest.mark.parametrize("max_length", [48, 128])
def test_an_rft_prompt_longer_than_max_length_names_its_file_and_line_before_training(
    tiny_model: Path, tmp_path: Path, max_length: int
) -> None:
    """``max_length`` is an RFT prompt's room (the rollout engine's context is it plus the longest answer). A prompt
    over it, counted through the model's chat template, is refused by line before the model loads; the longest one
    that fits is accepted. Both files are checked: the training file and the validation file."""
    from sage_ft.training.chat import prompt_token_counter

    grader = {**HEDGE, "reference": "{{item.answer}}"}
    cfg = config(tiny_model, tmp_path / "train.jsonl", tmp_path / "out", method="rft", rft={"grader": grader})
    cfg.max_length = max_length
    trainer = LoRATrainer(cfg)
    count = prompt_token_counter(trainer.tokenizer)

    def row(words: int) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": " ".join(WORDS * 40)[: words * 6]}], "answer": "x"}

    words = 1
    while count(row(words + 1)["messages"]) <= max_length:
        words += 1
    fits, over = row(words), row(words + 1)
    tokens = count(over["messages"])

    def write(train: list[dict[str, Any]], valid: list[dict[str, Any]]) -> None:
        for name, rows in (("train.jsonl", train), ("valid.jsonl", valid)):
            (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    cfg.validation_file = str(tmp_path / "valid.jsonl")
    write([row(1), fits], [row(1), fits])
    train, held = trainer.build_datasets()
    assert len(train) == 2 and held is not None and len(held) == 2  # the longest prompt that fits is kept

    for name, line in (("train.jsonl", 3), ("valid.jsonl", 2)):
        write([row(1), row(1), over] if name == "train.jsonl" else [row(1)], [row(1), over] if line == 2 else [row(1)])
        with pytest.raises(DataError) as exc:
            LoRATrainer(cfg).build_datasets()
        assert tokens > max_length and exc.value.field == "messages", str(exc.value)
        assert str(exc.value.path).endswith(name) and exc.value.line == line, str(exc.value)
        assert f"{tokens} tokens" in str(exc.value) and f"over max_length ({max_length})" in str(exc.value)


def test_rollouts_and_the_final_evaluation_are_held_to_the_response_format(
    tiny_model: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """With a ``json_schema`` response format, every answer TRL samples for the reward, and every answer of the
    end-of-job evaluation, is JSON that matches it, from the first step on: the random model alone never writes any
    (``test_constrained_sampling``). The grader reads ``{{sample.output_json.city}}``, so it scores every answer."""
    import jsonschema

    from sage_ft.training.rft import GraderReward

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Brightport", "Cold Harbour"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}
    rows = [{"messages": [{"role": "user", "content": q}], "answer": "Brightport"} for q in QUESTIONS[:5]]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    grader = {"type": "string_check", "name": "city", "input": "{{sample.output_json.city}}"}
    grader.update(reference="{{item.answer}}", operation="eq")
    rft = {"grader": grader, "response_format": response_format, "num_generations": 2, "max_completion_length": 24}
    cfg = config(tiny_model, data, tmp_path / "out", method="rft", rft=rft, max_steps=2, per_device_train_batch_size=2)
    cfg.validation_split, cfg.eval_items = 0.4, 2
    seen: list[str] = []
    scored = GraderReward.__call__

    def recording(self: GraderReward, prompts: Any, completions: Any, item_json: Any, **kw: Any) -> Any:
        seen.extend(c[-1]["content"] if isinstance(c, list) else str(c) for c in completions)
        return scored(self, prompts, completions, item_json, **kw)

    monkeypatch.setattr(GraderReward, "__call__", recording)
    result = LoRATrainer(cfg).train()
    assert len(seen) >= 4
    for text in seen:
        jsonschema.validate(json.loads(text), schema)
    report = result.evaluation
    assert report is not None, "the end-of-job evaluation ran"
    answers = [item["answers"][model] for item in report["items"] for model in ("tuned", "base")]
    assert answers and all(json.loads(a)["city"] in ("Brightport", "Cold Harbour") for a in answers), answers


def test_rollouts_come_from_vllm_in_the_trainer_only_where_cuda_and_vllm_are_there(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """``rft.rollouts``: auto samples with transformers here (no GPU), and with vLLM in TRL's colocate mode where a
    CUDA device and the vllm package are both there; asking for vLLM without them is an error naming the field."""
    import importlib

    import torch

    from sage_ft.errors import ConfigError
    from sage_ft.training.rft import grpo_args

    common = {"output_dir": str(tmp_path), "eval_steps": 10, "report_to": "none", "use_cpu": True}
    grader = {**HEDGE, "reference": "x"}

    def cfg(**rft: Any) -> Any:
        return config(tmp_path, tmp_path / "d.jsonl", tmp_path, method="rft", rft={"grader": grader, **rft})

    assert grpo_args(common, cfg()).use_vllm is False
    with pytest.raises(ConfigError) as exc:
        grpo_args(common, cfg(rollouts="vllm"))
    assert exc.value.param == "rft.rollouts" and "a CUDA device" in str(exc.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trl_imports = importlib.import_module("trl.import_utils")  # (trl's lazy module hides it as an attribute)
    monkeypatch.setattr(trl_imports, "is_vllm_available", lambda *a, **k: True)
    from sage_ft.training.rft import rollout_engine

    assert rollout_engine("auto") == "vllm" and rollout_engine("transformers") == "transformers"
    args = grpo_args(common, cfg(max_completion_length=64))
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization) == (True, "colocate", 0.3)
    assert args.vllm_max_model_length == 128 + 64  # the prompt's room and the longest answer
    monkeypatch.setattr(trl_imports, "is_vllm_available", lambda *a, **k: False)
    assert rollout_engine("auto") == "transformers"
    with pytest.raises(ConfigError, match="need vllm in the worker"):
        rollout_engine("vllm")
