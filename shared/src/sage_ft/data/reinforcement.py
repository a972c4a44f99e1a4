"""Reinforcement fine-tuning rows, in OpenAI's RFT JSONL: ``messages`` (the prompt the model answers) and any
other fields, which the grader reads as ``{{item.<field>}}`` (a python grader gets the whole row as ``item``).

Every problem names the file, line and field: a row without messages, a message the chat template cannot render,
a prompt that already ends with the answer, a field the grader's templates read that the row lacks, or (in the
trainer, with the model's tokenizer) a prompt longer than ``max_length``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_ft.data.formats import _messages
from sage_ft.data.loader import read_file
from sage_ft.errors import DataError


@dataclass
class Prompt:
    """One RFT row: the prompt messages and the row's other fields (the grader's ``item``)."""

    messages: list[dict[str, str]]
    item: dict[str, Any]
    line: int
    index: int = 0
    format: str = "openai_rft"


def is_prompt(record: Any) -> bool:
    """An RFT row: messages with no answer among them (a supervised record always has the assistant's)."""
    messages = record.get("messages") if isinstance(record, dict) else None
    return (
        isinstance(messages, list)
        and bool(messages)
        and not any(isinstance(m, dict) and m.get("role") in ("assistant", "gpt") for m in messages)
    )


def to_prompt(record: Any, needed: set[str], path: str | None, line: int, index: int = 0) -> Prompt:
    if not isinstance(record, dict):
        raise DataError("each row must be a JSON object with messages", path=path, line=line)
    messages = [
        {"role": m["role"], "content": m["content"]}
        for m in _messages(record.get("messages"), "messages", "messages", path, line, answered=False)
    ]
    if messages[-1]["role"] == "assistant":
        raise DataError(
            "the last message is the assistant's: an RFT prompt ends where the model's answer starts",
            path=path,
            line=line,
            field=f"messages[{len(messages) - 1}].role",
        )
    item = {k: v for k, v in record.items() if k != "messages"}
    missing = sorted(needed - set(item))
    if missing:
        raise DataError(
            f"the grader reads {{{{item.{missing[0]}}}}}, which this row does not have",
            path=path,
            line=line,
            field=missing[0],
        )
    return Prompt(messages, item, line, index)


def load_prompts(
    path: str | Path,
    needed: set[str] | None = None,
    name: str | None = None,
    *,
    prompt_tokens: Callable[[list[dict[str, Any]]], int] | None = None,
    max_length: int | None = None,
) -> list[Prompt]:
    """Every row of an RFT file; ``needed``: the item fields the grader's templates read. With ``prompt_tokens``
    (a prompt's length through the model's chat template, generation prompt included) and ``max_length``, a prompt
    longer than ``max_length`` is an error too: it cannot be cut without losing its question or the turn the answer
    starts from, and the rollout engine would fail on it mid-training. Raises ``DataError`` on the first bad row."""
    data = read_file(path, name)
    if data.errors:
        raise data.errors[0]
    if not data.records:
        raise DataError("has no rows; an RFT file needs at least one prompt", path=data.path)
    prompts = [to_prompt(r.value, needed or set(), data.path, r.line, r.index) for r in data.records]
    if prompt_tokens is not None and max_length is not None:
        for prompt in prompts:
            tokens = prompt_tokens(prompt.messages)
            if tokens > max_length:
                raise DataError(
                    f"the prompt is {tokens} tokens with the model's chat template, over max_length ({max_length}), "
                    "the room an RFT prompt has (the answer gets rft.max_completion_length on top): shorten it or "
                    "raise max_length",
                    path=data.path,
                    line=prompt.line,
                    field="messages",
                )
    return prompts
