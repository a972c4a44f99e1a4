"""Per-record format detection and conversion of every supported format into chat messages.

Formats: alpaca (instruction/input/output), qa (question/answer/context), conversations (role/content or
ShareGPT from/value), openai (messages, optional per-message weight 0/1) and plain text. Detection looks at each
record on its own, so a file may hold several formats; a single record holding the keys of two formats is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sage_ft.errors import DataError

FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output"),
    "qa": ("question", "answer", "context"),
    "conversations": ("conversations",),
    "openai": ("messages",),
    "text": ("text",),
}
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
}
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Conversation:
    """Chat messages ready for a chat template. ``weight`` 0 on an assistant message excludes it from the loss."""

    messages: list[dict[str, Any]]
    format: str
    line: int
    index: int


def detect_format(record: Any, *, path: str | None = None, line: int | None = None) -> str:
    if not isinstance(record, dict):
        raise DataError(f"record must be a JSON object, got {type(record).__name__}", path=path, line=line)
    found = {fmt: [k for k in keys if k in record] for fmt, keys in FORMAT_KEYS.items()}
    found = {fmt: keys for fmt, keys in found.items() if keys}
    if not found:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise DataError(
            f"unknown record format (keys: {keys}); expected instruction/output, question/answer, "
            "conversations, messages or text",
            path=path,
            line=line,
        )
    if len(found) > 1:
        parts = " and ".join(f"{fmt} ({'/'.join(keys)})" for fmt, keys in found.items())
        raise DataError(f"record mixes formats: {parts}; use one format per record", path=path, line=line)
    return next(iter(found))


def _checked(value: str, field: str, path: str | None, line: int | None) -> str:
    """Text a tokenizer can take: JSON can spell a lone UTF-16 surrogate (``"\\ud800"``), which is no character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = value[err.start]
        raise DataError(
            f"holds a lone UTF-16 surrogate (\\u{ord(bad):04x} at character {err.start}), which is not "
            "text; encode the character properly",
            path=path,
            line=line,
            field=field,
        ) from None
    return value


def _text(
    record: dict[str, Any], key: str, *, required: bool, path: str | None, line: int | None, allow_empty: bool = True
) -> str:
    if key not in record or record[key] is None:
        if required:
            raise DataError("missing required field", path=path, line=line, field=key)
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", path=path, line=line, field=key)
    if not allow_empty and not value.strip():
        raise DataError("is empty (an empty answer teaches the model to say nothing)", path=path, line=line, field=key)
    return _checked(value, key, path, line)


def _system(record: dict[str, Any], path: str | None, line: int | None) -> list[dict[str, Any]]:
    system = _text(record, "system", required=False, path=path, line=line)
    return [{"role": "system", "content": system}] if system.strip() else []


def _content(value: Any, field: str, path: str | None, line: int | None) -> str:
    """Message content: a string, or OpenAI-style list of text parts."""
    if isinstance(value, str):
        return _checked(value, field, path, line)
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        parts = [p.get("text") for p in value]
        if all(isinstance(p, str) for p in parts):
            return _checked("".join(str(p) for p in parts), field, path, line)
    if value is None:
        raise DataError("missing message content", path=path, line=line, field=field)
    raise DataError("content must be a string or a list of text parts", path=path, line=line, field=field)


def _messages(
    items: Any, key: str, fmt: str, path: str | None, line: int | None, *, answered: bool = True
) -> list[dict[str, Any]]:
    """Checked messages. ``answered``: the assistant's answer is among them (training records); a prompt for
    reinforcement fine-tuning has none."""
    if not isinstance(items, list) or not items:
        raise DataError("must be a non-empty list of messages", path=path, line=line, field=key)
    sharegpt = fmt == "conversations" and isinstance(items[0], dict) and "from" in items[0]
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(msg, dict):
            raise DataError("message must be an object", path=path, line=line, field=where)
        if role_key not in msg:
            raise DataError("missing required field", path=path, line=line, field=f"{where}.{role_key}")
        raw_role = msg[role_key]
        role = ROLE_ALIASES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise DataError(
                f"unknown role {raw_role!r} (expected one of {', '.join(ROLES)})",
                path=path,
                line=line,
                field=f"{where}.{role_key}",
            )
        if content_key not in msg:
            raise DataError("missing required field", path=path, line=line, field=f"{where}.{content_key}")
        content = _content(msg[content_key], f"{where}.{content_key}", path, line)
        message: dict[str, Any] = {"role": role, "content": content}
        if "weight" in msg:
            weight = msg["weight"]
            if role != "assistant":
                raise DataError(
                    "weight is only allowed on assistant messages", path=path, line=line, field=f"{where}.weight"
                )
            if weight not in (0, 1) or isinstance(weight, bool):
                raise DataError(f"weight must be 0 or 1, got {weight!r}", path=path, line=line, field=f"{where}.weight")
            message["weight"] = int(weight)
        if role == "assistant" and not content.strip():
            raise DataError(
                "is empty (an empty answer teaches the model to say nothing)",
                path=path,
                line=line,
                field=f"{where}.{content_key}",
            )
        out.append(message)
    if not answered:
        return out
    if not any(m["role"] == "assistant" for m in out):
        raise DataError("has no assistant message to learn from", path=path, line=line, field=key)
    if all(m.get("weight", 1) == 0 for m in out if m["role"] == "assistant"):
        raise DataError("every assistant message has weight 0, nothing to learn", path=path, line=line, field=key)
    return out


def to_conversation(record: Any, *, path: str | None = None, line: int = 0, index: int = 0) -> Conversation:
    """Detect the record's format and convert it to chat messages, or raise ``DataError`` naming the field."""
    fmt = detect_format(record, path=path, line=line)
    msgs: list[dict[str, Any]]
    if fmt == "alpaca":
        instruction = _text(record, "instruction", required=True, path=path, line=line, allow_empty=False)
        extra = _text(record, "input", required=False, path=path, line=line)
        output = _text(record, "output", required=True, path=path, line=line, allow_empty=False)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        msgs = [
            *_system(record, path, line),
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": output},
        ]
    elif fmt == "qa":
        question = _text(record, "question", required=True, path=path, line=line, allow_empty=False)
        context = _text(record, "context", required=False, path=path, line=line)
        answer = _text(record, "answer", required=True, path=path, line=line, allow_empty=False)
        prompt = f"Context:\n{context}\n\nQuestion: {question}" if context.strip() else question
        msgs = [
            *_system(record, path, line),
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ]
    elif fmt == "text":
        text = _text(record, "text", required=True, path=path, line=line, allow_empty=False)
        msgs = [{"role": "assistant", "content": text}]
    else:
        key = FORMAT_KEYS[fmt][0]
        msgs = _messages(record.get(key), key, fmt, path, line)
    return Conversation(messages=msgs, format=fmt, line=line, index=index)
