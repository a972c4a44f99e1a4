"""Errors a user sees. Each carries a message meant to be printed as is, without a traceback."""

from __future__ import annotations

import re


class SageFTError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing explanation."""


# pydantic's union-member markers in an error's ``loc`` (``n_epochs.constrained-int``): not part of a field's path
UNION_TAG = re.compile(r"^(int|float|str|bool|constrained-\w+|function-.*|.*\[.*\])$")


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
