"""Whatever validation accepts, training accepts: random records (any Unicode, lone surrogates included, as JSON can
spell them) go through the validator, and every record it accepts must encode through the tokenizer and chat
template exactly as the trainer encodes it. A record it refuses must be refused by line and field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_ft.data.validate import validate_bytes
from sage_ft.errors import DataError

# any code point, with the troublesome ones drawn often: lone surrogates, line separators, JSON's own syntax
CHARS = st.characters(exclude_categories=[]) | st.characters(categories=["Cs"]) | st.sampled_from('\n\r\x85\u2028"\\{}')
ANY_TEXT = st.lists(CHARS, max_size=40).map("".join)  # st.text() itself never yields a lone surrogate


def records() -> st.SearchStrategy[dict[str, Any]]:
    qa = st.fixed_dictionaries({"question": ANY_TEXT, "answer": ANY_TEXT}, optional={"context": ANY_TEXT})
    alpaca = st.fixed_dictionaries({"instruction": ANY_TEXT, "output": ANY_TEXT}, optional={"input": ANY_TEXT})
    role = st.sampled_from(["user", "assistant", "system"])
    chat = st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries(
                    {
                        "role": role,
                        "content": ANY_TEXT
                        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": ANY_TEXT}), max_size=2),
                    }
                ),
                min_size=1,
                max_size=4,
            )
        }
    )
    return qa | alpaca | chat


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    pytest.importorskip("transformers")
    from sage_ft.training.tiny_model import build_tokenizer

    return build_tokenizer()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records(), ascii_escapes=st.booleans())
def test_every_record_the_validator_accepts_encodes_for_training(
    tokenizer: Any, record: dict, ascii_escapes: bool
) -> None:
    from sage_ft.training.chat import encode_conversation

    raw = (json.dumps(record, ensure_ascii=ascii_escapes) + "\n").encode("utf-8", "surrogatepass")
    try:
        report = validate_bytes(raw, name="fuzz.jsonl")
    except DataError as err:
        assert err.line is not None or err.path  # a file-level refusal still says where
        return
    for conv in report.conversations:
        encoded = encode_conversation(tokenizer, conv.messages)
        assert len(encoded["input_ids"]) == len(encoded["assistant_masks"])
    for error in report.errors:
        assert error.line == 1 and error.reason


def test_a_lone_surrogate_is_refused_by_line_and_field() -> None:
    lines = b'{"question": "fine", "answer": "ok"}\n{"question": "bad \\ud800 here", "answer": "ok"}\n'
    report = validate_bytes(lines, name="data.jsonl")
    assert len(report.conversations) == 1 and len(report.errors) == 1
    error = report.errors[0]
    assert error.line == 2 and error.field == "question" and "surrogate" in error.reason
