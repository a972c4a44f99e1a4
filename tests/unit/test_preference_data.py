"""Preference records (DPO data): three formats detected per record, and every bad record named by line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft.data import validate_file
from sage_ft.data.validate import load_conversations, load_preferences
from sage_ft.errors import DataError

OPENAI = {
    "input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky?"}]},
    "preferred_output": [{"role": "assistant", "content": "Blue."}],
    "non_preferred_output": [{"role": "assistant", "content": "Green."}],
}
TRL_TEXT = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}
TRL_CHAT = {
    "prompt": [{"role": "user", "content": "Sky?"}],
    "chosen": [{"role": "assistant", "content": "Blue."}],
    "rejected": [{"role": "assistant", "content": "Green."}],
}
SHAREGPT = {
    "conversations": [{"from": "human", "value": "Sky?"}],
    "chosen": {"from": "gpt", "value": "Blue."},
    "rejected": {"from": "gpt", "value": "Green."},
}
SFT = {"question": "Sky?", "answer": "Blue."}


def write(tmp_path: Path, records: list[Any], name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("record", "fmt"),
    [(OPENAI, "openai_preference"), (TRL_TEXT, "trl"), (TRL_CHAT, "trl"), (SHAREGPT, "sharegpt_preference")],
)
def test_each_format_gives_prompt_and_both_answers(tmp_path: Path, record: dict, fmt: str) -> None:
    (pref,) = load_preferences(write(tmp_path, [record]))
    assert (pref.format, pref.chosen, pref.rejected) == (fmt, "Blue.", "Green.")
    assert pref.prompt[-1] == {"role": "user", "content": "Sky?"}


def test_formats_mix_freely_in_one_preference_file(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, [OPENAI, TRL_TEXT, TRL_CHAT, SHAREGPT]))
    assert report.ok and report.kind == "preference" and len(report.preferences) == 4
    data = report.to_dict()
    assert data["kind"] == "preference" and set(data["sides"]) == {"prompt", "chosen", "rejected"}
    assert data["sides"]["chosen"]["total"] > 0 and not data["tokens"]["exact"]


def _error(tmp_path: Path, record: Any) -> DataError:
    report = validate_file(write(tmp_path, [TRL_TEXT, record]))
    assert len(report.errors) == 1, report.errors
    err = report.errors[0]
    assert err.line == 2 and err.path and err.path.endswith("p.jsonl")
    return err


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({"prompt": "Sky?", "chosen": "Blue."}, "rejected", "both answers"),
        ({**OPENAI, "non_preferred_output": None}, "non_preferred_output", "both answers"),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Sky?"}]},
                "preferred_output": OPENAI["preferred_output"],
            },
            "non_preferred_output",
            "both answers",
        ),
        ({"prompt": "Sky?", "chosen": "Blue.", "rejected": " Blue. "}, "rejected", "same answer"),
        ({"prompt": " ", "chosen": "Blue.", "rejected": "Green."}, "prompt", "nothing to answer"),
        ({**OPENAI, "input": {"messages": []}}, "input.messages", "nothing to answer"),
        ({**OPENAI, "preferred_output": [{"role": "user", "content": "Blue."}]}, "preferred_output[0].role", "'user'"),
        ({**SHAREGPT, "rejected": {"from": "human", "value": "Green."}}, "rejected.from", "'user'"),
        ({**TRL_CHAT, "chosen": [{"role": "assistant", "content": ""}]}, "chosen", "empty"),
        ({**OPENAI, "preferred_output": "Blue."}, "preferred_output", "one assistant message"),
        (
            {**TRL_CHAT, "prompt": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Hm"}]},
            "prompt[1]",
            "ends with an assistant turn",
        ),
        ({**SHAREGPT, "conversations": [{"from": "robot", "value": "Sky?"}]}, "conversations[0].from", "unknown role"),
    ],
)
def test_every_bad_record_names_its_line_and_field(tmp_path: Path, record: dict, field: str, words: str) -> None:
    err = _error(tmp_path, record)
    assert err.field == field and words in str(err), str(err)


def test_mixing_supervised_and_preference_records_names_both_lines(tmp_path: Path) -> None:
    report = validate_file(write(tmp_path, [TRL_TEXT, TRL_CHAT, SFT, OPENAI]))
    assert [(e.line, "one kind per file" in str(e)) for e in report.errors] == [(3, True)]
    assert "line 1" in str(report.errors[0]) and report.kind == "preference"
    report = validate_file(write(tmp_path, [SFT, OPENAI], "s.jsonl"))
    assert report.kind == "supervised" and report.errors[0].line == 2 and "preference record" in str(report.errors[0])


def test_the_wrong_method_for_a_file_says_which_method_it_fits(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fit method 'dpo'"):
        load_conversations(write(tmp_path, [TRL_TEXT]))
    with pytest.raises(DataError, match="fit method 'supervised'"):
        load_preferences(write(tmp_path, [SFT], "s.jsonl"))


def test_a_json_array_of_pairs_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        "[\n" + ",\n".join(json.dumps(r) for r in [TRL_TEXT, OPENAI, {**TRL_TEXT, "rejected": "Blue."}]) + "\n]",
        encoding="utf-8",
    )
    report = validate_file(path)
    assert [(e.line, e.field) for e in report.errors] == [(4, "rejected")]
