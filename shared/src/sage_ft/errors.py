"""Errors a user sees. Each carries a message meant to be printed as is, without a traceback."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


class SageFTError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing explanation."""


# pydantic's union-member markers in an error's ``loc`` (``n_epochs.constrained-int``): not part of a field's path
UNION_TAG = re.compile(r"^(int|float|str|bool|constrained-\w+|function-.*|.*\[.*\])$")


def request_error(error: Mapping[str, Any], tagged: Mapping[str, Sequence[str]]) -> tuple[str, str]:
    """A pydantic error as a request names it: ``(param, message)``. Union-member markers leave the path, and so does
    the member tag pydantic puts after a union discriminated on ``type`` (``tagged``: field -> its tags), so
    ``method.dpo.hyperparameters.beta`` reads as the request spells it. An unknown tag names the field's ``type`` and
    lists the supported ones; another member's settings are named as such."""
    loc = [str(p) for p in error.get("loc", ()) if not UNION_TAG.match(str(p))]
    path: list[str] = []
    tag = None
    for i, part in enumerate(loc):
        field = _tagged_field(path, tagged)
        if field is not None and part in tagged[field] and path and path[-1] == loc[i - 1]:  # a member's tag
            tag = part
            continue
        path.append(part)
    kind = error.get("type")
    message = str(error.get("msg", "invalid request")).removeprefix("Value error, ")
    field = _tagged_field(path, tagged)
    if kind in ("union_tag_invalid", "union_tag_not_found") and field is not None:
        given = (error.get("ctx") or {}).get("tag")
        supported = ", ".join(tagged[field])
        noun = "grader type" if field in _COLLECTIONS or field == "grader" else field
        message = f"unsupported {noun} {given!r}; supported: {supported}" if given else f"give a type: {supported}"
        path.append("type")
    elif kind == "extra_forbidden":
        message = "unknown parameter"
        if tag is not None and len(path) >= 2 and path[-2] in tagged and path[-1] in tagged[path[-2]]:
            message = f"'{path[-1]}' settings given for {path[-2]} type '{tag}'"
            path.pop()
    return ".".join(path), message


def _tagged_field(path: list[str], tagged: Mapping[str, Sequence[str]]) -> str | None:
    """The tagged union ``path`` ends at: the field itself, or an entry (index, key) of a list or map of them."""
    if path and path[-1] in tagged:
        return path[-1]
    if len(path) >= 2 and path[-2] in tagged and path[-2] in _COLLECTIONS:
        return path[-2]
    return None


_COLLECTIONS = frozenset({"testing_criteria", "graders"})  # tagged fields that are lists or maps of members


class ConfigError(SageFTError, ValueError):
    """An invalid or contradictory training configuration; ``param`` names the offending request field if known,
    ``loc`` is the failing config field's path as pydantic reports it (``("lora", "r")``)."""

    def __init__(self, message: str, *, param: str | None = None, loc: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.loc = loc


class DataError(SageFTError, ValueError):
    """A dataset problem, located by file, line (or record index) and field."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = []
        if path:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        prefix = ":".join(where)
        if field:
            prefix = f"{prefix}: field '{field}'" if prefix else f"field '{field}'"
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.reason = message


class ModelNotFoundError(SageFTError, FileNotFoundError):
    """A model name that resolves to neither a local directory nor a reachable hub id."""


class TrainingOOMError(SageFTError, MemoryError):
    """Out of memory while training; the message lists what to try, in order."""

    ADVICE = (
        "Out of memory. Try these in order:\n"
        "  1. load_in_8bit=True or load_in_4bit=True (quantize the base model)\n"
        "  2. max_length=512 (shorter sequences)\n"
        "  3. per_device_train_batch_size=1 (raise gradient_accumulation_steps to keep the effective batch)\n"
        "  4. gradient_checkpointing=True\n"
        "  5. lora.r=4 (lower the LoRA rank)"
    )

    def __init__(self, detail: str = "") -> None:
        msg = self.ADVICE if not detail else f"{detail.strip()}\n{self.ADVICE}"
        super().__init__(msg)


class MergeError(SageFTError, RuntimeError):
    """Merging an adapter into its base model failed; no output was left behind."""
