"""Every bad input named in the issue gives a DataError naming file, line (or record) and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_ft.data import load_conversations, validate_file
from sage_ft.errors import DataError


def _write(tmp_path: Path, content: bytes | str, name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _error(path: Path) -> DataError:
    with pytest.raises(DataError) as err:
        load_conversations(path)
    assert str(path) in str(err.value)
    assert "Traceback" not in str(err.value)
    return err.value


GOOD = json.dumps({"question": "q", "answer": "a"})


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, f'{GOOD}\n{GOOD}\n{{"question": "q", "answer": }}\n'))
    assert err.line == 3 and "malformed JSON" in str(err) and "line 3" in str(err)


def test_malformed_json_array_names_the_line(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, f"[\n{GOOD},\n{GOOD}\n{GOOD}\n]", "d.json"))
    assert err.line == 4 and "expected ','" in str(err)


def test_a_malformed_element_deep_in_a_json_array_names_its_own_line(tmp_path: Path) -> None:
    """The element starts on line 6 and breaks on line 8: line 8, not an offset added twice (13)."""
    body = f'[\n{GOOD},\n{GOOD},\n{GOOD},\n{GOOD},\n{{"question": "q",\n "x": 1,\n "answer": }}\n]'
    err = _error(_write(tmp_path, body, "d.json"))
    assert err.line == 8 and "line 8" in str(err), str(err)


def test_missing_field(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, f"{GOOD}\n" + json.dumps({"instruction": "do it", "input": "x"}) + "\n"))
    assert (err.line, err.field) == (2, "output") and "missing" in str(err)


def test_unknown_role(tmp_path: Path) -> None:
    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}
    err = _error(_write(tmp_path, json.dumps(rec)))
    assert err.line == 1 and err.field == "messages[1].role" and "'robot'" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in str(_error(_write(tmp_path, "")))
    assert "empty" in str(_error(_write(tmp_path, "  \n\n", "blank.jsonl")))


def test_non_utf8_file(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, GOOD.encode() + b"\n" + '{"text": "caf\xe9"}'.encode("latin-1")))
    assert err.line == 2 and "UTF-8" in str(err)


def test_bom(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode()))
    assert "BOM" in str(err) and err.line == 1
    assert "UTF-16" in str(_error(_write(tmp_path, GOOD.encode("utf-16"), "u16.jsonl")))


def test_nesting_bomb(tmp_path: Path) -> None:
    deep = '{"text": "a", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"
    err = _error(_write(tmp_path, f"{GOOD}\n{deep}\n"))
    assert err.line == 2 and "nested too deeply" in str(err)
    moderate = '{"text": "a", "meta": ' + "[" * 40 + "]" * 40 + "}"
    assert "nested too deeply" in str(_error(_write(tmp_path, moderate, "m.jsonl")))


def test_huge_integer(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, '{"text": "a", "id": ' + "9" * 5000 + "}"))
    assert err.line == 1 and "5000 digits" in str(err)


def test_record_mixing_formats(tmp_path: Path) -> None:
    rec = {"instruction": "x", "output": "y", "messages": [{"role": "assistant", "content": "z"}]}
    err = _error(_write(tmp_path, f"{GOOD}\n{json.dumps(rec)}"))
    assert err.line == 2 and "mixes formats" in str(err) and "alpaca" in str(err) and "openai" in str(err)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"instruction": "x", "output": "   "}, "output"),
        ({"question": "q", "answer": ""}, "answer"),
        ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]}, "conversations[1].value"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
            "messages[1].content",
        ),
        ({"text": ""}, "text"),
    ],
)
def test_empty_answer(tmp_path: Path, record: dict, field: str) -> None:
    err = _error(_write(tmp_path, json.dumps(record)))
    assert err.field == field and "empty" in str(err)


def test_other_shape_errors(tmp_path: Path) -> None:
    assert "JSON object" in str(_error(_write(tmp_path, "[1, 2]", "a.json")))
    assert "unknown record format" in str(_error(_write(tmp_path, '{"prompt": "x"}')))
    bad_weight = {"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}
    assert "only allowed on assistant" in str(_error(_write(tmp_path, json.dumps(bad_weight))))
    no_answer = {"messages": [{"role": "user", "content": "a"}]}
    assert "no assistant message" in str(_error(_write(tmp_path, json.dumps(no_answer))))
    assert "NaN" in str(_error(_write(tmp_path, '{"text": "a", "x": NaN}')))


def test_report_collects_every_error_with_lines(tmp_path: Path) -> None:
    lines = [GOOD, "{oops", GOOD, json.dumps({"question": "q"}), GOOD]
    report = validate_file(_write(tmp_path, "\n".join(lines)))
    assert not report.ok
    assert [(e["line"], e["field"]) for e in report.to_dict()["errors"]] == [(2, None), (4, "answer")]
    assert report.to_dict()["valid_records"] == 3
    with pytest.raises(DataError, match="and 1 more error"):
        report.raise_for_errors()
