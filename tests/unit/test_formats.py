from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_ft.data import BUILTIN_TASKS, builtin_dataset_path, load_conversations, to_conversation, validate_file

RECORDS = {
    "alpaca": {"instruction": "Translate to French.", "input": "Good night", "output": "Bonne nuit"},
    "qa": {"question": "Who won?", "answer": "The Falcons.", "context": "The Falcons won 3-1."},
    "conversations": {"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    "openai": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "weight": 1},
        ]
    },
    "text": {"text": "Once upon a time."},
}


def test_each_format_becomes_chat_messages() -> None:
    alpaca = to_conversation(RECORDS["alpaca"]).messages
    assert alpaca == [
        {"role": "user", "content": "Translate to French.\n\nGood night"},
        {"role": "assistant", "content": "Bonne nuit"},
    ]
    qa = to_conversation(RECORDS["qa"]).messages
    assert "The Falcons won 3-1." in qa[0]["content"] and "Who won?" in qa[0]["content"]
    assert qa[-1] == {"role": "assistant", "content": "The Falcons."}
    assert to_conversation(RECORDS["conversations"]).messages == to_conversation(RECORDS["sharegpt"]).messages
    openai = to_conversation(RECORDS["openai"]).messages
    assert [m["role"] for m in openai] == ["system", "user", "assistant"] and openai[-1]["weight"] == 1
    assert to_conversation(RECORDS["text"]).messages == [{"role": "assistant", "content": "Once upon a time."}]
    parts = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
        ]
    }
    assert to_conversation(parts).messages[0]["content"] == "ab"


def test_detection_is_per_record(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS.values()))
    report = validate_file(path)
    assert report.ok
    assert [r["format"] for r in report.to_dict()["record_formats"]] == [
        "alpaca",
        "qa",
        "conversations",
        "conversations",
        "openai",
        "text",
    ]
    assert report.formats["conversations"] == 2


def test_json_array_records_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[\n  {"text": "a"},\n  {"question": "q", "answer": "a"},\n\n  {"text": "b"}\n]\n')
    report = validate_file(path)
    assert report.container == "json" and [c.line for c in report.conversations] == [2, 3, 5]


@pytest.mark.parametrize("task", BUILTIN_TASKS)
def test_builtin_datasets_are_valid_and_real(task: str) -> None:
    convs = load_conversations(builtin_dataset_path(task))
    assert len(convs) >= 15
    answers = [m["content"] for c in convs for m in c.messages if m["role"] == "assistant"]
    assert len(set(answers)) == len(answers), "every answer is distinct: no canned boilerplate"


def test_report_has_token_stats_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x" * 400}) + "\n" + json.dumps({"text": "short"}) + "\n")
    report = validate_file(path, max_length=50).to_dict()
    assert report["records"] == 2 and report["tokens"]["max"] > 50 >= report["tokens"]["min"]
    assert report["truncated"] == 1 and report["truncated_share"] == 0.5 and report["tokens"]["exact"] is False
