"""The evaluation built into training and ``sage_ft.evaluate``, in-process on the tiny model (no server).

A fine-tune taught fictional code words is compared with its base: exact match, token F1 and ROUGE-L on the answers,
and the held-out loss. Two shapes of held-out data: a validation file, and a share split off the training data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sage_ft
from sage_ft import ConfigError, LoRATrainer

from .test_training import qa_config

EVAL_ITEMS = 8


@pytest.fixture(scope="module")
def tuned(tiny_model: Path, qa_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("holdout")
    cfg = qa_config(
        tiny_model, qa_file, out, validation_file=str(qa_file), eval_items=EVAL_ITEMS, eval_max_new_tokens=12
    )
    return LoRATrainer(cfg).train()


def test_training_with_a_validation_file_compares_the_fine_tune_with_its_base(tuned: Any) -> None:
    ev = tuned.evaluation
    assert ev["n"] == EVAL_ITEMS and ev["metrics"] == ["exact", "f1", "rouge_l"]
    tuned_scores, base_scores = ev["models"]["tuned"], ev["models"]["base"]
    assert tuned_scores["exact"] >= 0.75 and base_scores["exact"] == 0.0, ev["models"]
    assert tuned_scores["f1"] > base_scores["f1"] and tuned_scores["rouge_l"] > base_scores["rouge_l"]
    assert ev["delta"]["exact"] == pytest.approx(tuned_scores["exact"] - base_scores["exact"], abs=1e-3)
    assert ev["loss"]["tuned"] < 0.5 * ev["loss"]["base"], ev["loss"]
    item = ev["items"][0]
    assert item["prompt"][-1]["role"] == "user" and item["reference"] and set(item["answers"]) == {"tuned", "base"}
    passed = [it for it in ev["items"] if it["scores"]["tuned"]["exact"] == 1.0]
    assert all(it["answers"]["tuned"] == it["reference"] for it in passed)


def test_sage_ft_evaluate_gives_the_same_answers_from_the_saved_adapter(tuned: Any, qa_file: Path) -> None:
    report = sage_ft.evaluate(tuned.adapter_dir, qa_file, max_items=EVAL_ITEMS, max_new_tokens=12)
    label = tuned.adapter_dir.name
    assert list(report["models"]) == [label, "base"]
    answers = {it["index"]: it["answers"] for it in report["items"]}
    for it in tuned.evaluation["items"]:
        assert answers[it["index"]] == {label: it["answers"]["tuned"], "base": it["answers"]["base"]}


def test_sage_ft_evaluate_against_another_model_and_with_other_metrics(
    tuned: Any, qa_file: Path, tiny_model: Path
) -> None:
    report = sage_ft.evaluate(
        tuned.adapter_dir, qa_file, against=tiny_model, metrics=["exact", "bleu"], max_items=4, max_new_tokens=12
    )
    assert report["n"] == 4 and set(report["models"]) == {tuned.adapter_dir.name, tiny_model.name}
    assert report["models"][tiny_model.name]["exact"] == 0.0 and report["delta"]["bleu"] > 0
    with pytest.raises(ConfigError, match="meteor"):
        sage_ft.evaluate(tuned.adapter_dir, qa_file, metrics=["meteor"])
    with pytest.raises(ConfigError, match="adapter"):
        sage_ft.evaluate(tiny_model, qa_file, against="base", max_items=1)


def test_a_share_held_out_of_the_training_data_is_evaluated_too(
    tiny_model: Path, tmp_path: Path, qa_records: list[dict]
) -> None:
    """The other shape: no validation file, 20 % of the records split off; its records were never trained on."""
    data = tmp_path / "chat.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": r["question"]},
                        {"role": "assistant", "content": r["answer"]},
                    ]
                }
            )
            + "\n"
            for r in qa_records
        )
    )
    cfg = qa_config(
        tiny_model,
        data,
        tmp_path / "out",
        validation_split=0.2,
        eval_items=50,
        num_train_epochs=8,
        eval_max_new_tokens=8,
    )
    result = LoRATrainer(cfg).train()
    ev = result.evaluation
    assert ev["n"] == 4  # 20 % of 20, however many were asked for
    assert [m["role"] for m in ev["items"][0]["prompt"]] == ["system", "user"]
    trained_on = {r["question"] for r in qa_records} - {it["prompt"][-1]["content"] for it in ev["items"]}
    assert len(trained_on) == 16
    assert ev["loss"]["tuned"] < ev["loss"]["base"]  # the answer format is learned even for unseen words
