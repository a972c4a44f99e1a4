"""Preference records (for DPO): a prompt, the answer to prefer, and the answer not to prefer, detected per record.

Formats:
- ``openai_preference``: OpenAI's ``{"input": {"messages": [...]}, "preferred_output": [assistant message],
  "non_preferred_output": [assistant message]}``;
- ``trl``: TRL's ``prompt``/``chosen``/``rejected``, each a string or a list of messages;
- ``sharegpt_preference``: LLaMA-Factory's ``conversations`` (ShareGPT ``from``/``value`` or ``role``/``content``)
  with ``chosen`` and ``rejected`` messages.

Every problem names the file, line and field: a missing side, an empty prompt, an answer that is not the
assistant's, or chosen and rejected that are the same answer (nothing to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sage_ft.data.formats import ROLE_ALIASES, ROLES, _content, _messages
from sage_ft.errors import DataError

PREFERENCE_KEYS: dict[str, tuple[str, ...]] = {
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
    "trl": ("prompt", "chosen", "rejected"),
    "sharegpt_preference": ("conversations", "chosen", "rejected"),
}
SIDES = {
    "openai_preference": ("preferred_output", "non_preferred_output"),
    "trl": ("chosen", "rejected"),
    "sharegpt_preference": ("chosen", "rejected"),
}


@dataclass
class Preference:
    """A prompt (chat messages, ending where the answer starts) and two assistant answers."""

    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    format: str
    line: int
    index: int


def is_preference(record: Any) -> bool:
    """Whether a record is meant as a preference pair (even a broken one), so it is judged as one."""
    return isinstance(record, dict) and bool(
        {"chosen", "rejected", "preferred_output", "non_preferred_output"} & set(record)
    )


def preference_format(record: dict[str, Any], path: str | None, line: int | None) -> str:
    if "preferred_output" in record or "non_preferred_output" in record:
        return "openai_preference"
    return "sharegpt_preference" if "conversations" in record else "trl"


def _answer(value: Any, field: str, fmt: str, path: str | None, line: int | None) -> str:
    """One side: a string (TRL), a message (LLaMA-Factory), or a list holding one assistant message."""
    if value is None:
        raise DataError("missing required field (a preference needs both answers)", path=path, line=line, field=field)
    if isinstance(value, str):
        if fmt == "openai_preference":
            raise DataError("must be a list with one assistant message", path=path, line=line, field=field)
        text = _content(value, field, path, line)
    else:
        messages = [value] if isinstance(value, dict) else value
        if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
            raise DataError(
                "must be one assistant message (a list with one message)", path=path, line=line, field=field
            )
        message = messages[0]
        where = field if isinstance(value, dict) else f"{field}[0]"
        role_key, content_key = ("from", "value") if "from" in message else ("role", "content")
        raw_role = message.get(role_key)
        role = ROLE_ALIASES.get(raw_role) if isinstance(raw_role, str) else None
        if role != "assistant":
            expected = f"the assistant's ({'gpt' if role_key == 'from' else 'assistant'})"
            shown = raw_role if role is None and raw_role is not None else role
            raise DataError(
                f"role is {shown!r}; an answer must be {expected}", path=path, line=line, field=f"{where}.{role_key}"
            )
        text = _content(message.get(content_key), f"{where}.{content_key}", path, line)
    if not text.strip():
        raise DataError(
            "is empty (an empty answer teaches the model to say nothing)", path=path, line=line, field=field
        )
    return text


def _prompt(record: dict[str, Any], fmt: str, path: str | None, line: int | None) -> list[dict[str, Any]]:
    if fmt == "openai_preference":
        body = record.get("input")
        if not isinstance(body, dict):
            raise DataError("must be an object with messages", path=path, line=line, field="input")
        items, key = body.get("messages"), "input.messages"
    elif fmt == "sharegpt_preference":
        items, key = record.get("conversations"), "conversations"
    else:
        items, key = record.get("prompt"), "prompt"
        if isinstance(items, str):
            if not items.strip():
                raise DataError("is empty: there is nothing to answer", path=path, line=line, field=key)
            return [{"role": "user", "content": _content(items, key, path, line)}]
    if not isinstance(items, list) or not items:
        raise DataError("is empty or missing: there is nothing to answer", path=path, line=line, field=key)
    # the prompt is a conversation up to the answer: it may end with any turn but an assistant's
    sharegpt = isinstance(items[0], dict) and "from" in items[0]
    pad = {"from": "gpt", "value": "x"} if sharegpt else {"role": "assistant", "content": "x"}
    padded = items if _ends_with_assistant(items) else [*items, pad]  # _messages wants an answer to check
    messages = _messages(padded, key, "conversations" if fmt == "sharegpt_preference" else "openai", path, line)
    messages = messages[: len(items)]
    if not any(m["content"].strip() for m in messages if m["role"] in ("user", "system", "tool")):
        raise DataError("has no text: there is nothing to answer", path=path, line=line, field=key)
    if messages[-1]["role"] == "assistant":
        raise DataError(
            "ends with an assistant turn; the preferred and rejected answers come after the prompt",
            path=path,
            line=line,
            field=f"{key}[{len(items) - 1}]",
        )
    return messages


def _ends_with_assistant(items: list[Any]) -> bool:
    last = items[-1] if isinstance(items[-1], dict) else {}
    role = last.get("role", last.get("from"))
    return isinstance(role, str) and ROLE_ALIASES.get(role) == "assistant"


def to_preference(record: Any, *, path: str | None = None, line: int = 0, index: int = 0) -> Preference:
    """Convert a preference record, or raise ``DataError`` naming the field."""
    if not isinstance(record, dict):
        raise DataError(f"record must be a JSON object, got {type(record).__name__}", path=path, line=line)
    fmt = preference_format(record, path, line)
    good, bad = SIDES[fmt]
    for side in (good, bad):
        if side not in record:
            raise DataError(
                f"missing required field (a preference needs both answers; roles: {', '.join(ROLES)})",
                path=path,
                line=line,
                field=side,
            )
    prompt = _prompt(record, fmt, path, line)
    chosen = _answer(record[good], good, fmt, path, line)
    rejected = _answer(record[bad], bad, fmt, path, line)
    if chosen.strip() == rejected.strip():
        raise DataError(
            f"is the same answer as {good}: a preference needs two different answers", path=path, line=line, field=bad
        )
    return Preference(prompt=prompt, chosen=chosen, rejected=rejected, format=fmt, line=line, index=index)
