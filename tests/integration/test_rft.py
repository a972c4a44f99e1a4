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
