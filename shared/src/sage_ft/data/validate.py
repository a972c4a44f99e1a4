"""Dataset validation report: computed before any GPU time is spent.

The report lists the format of every record, counts, token-length statistics and the share of records that
``max_length`` will truncate. Token counts are exact when a token counter (built from the model's tokenizer and chat
template) is given, and an estimate (characters / 4) otherwise, flagged as such.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_ft.data.formats import Conversation, to_conversation
from sage_ft.data.loader import RawData, parse_bytes, read_file
from sage_ft.errors import DataError

TokenCounter = Callable[[list[dict[str, Any]]], int]
MAX_REPORTED_ERRORS = 50


@dataclass
class ValidationReport:
    path: str
    container: str
    conversations: list[Conversation] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)
    tokens_exact: bool = False
    max_length: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.conversations)

    @property
    def formats(self) -> dict[str, int]:
        return dict(Counter(c.format for c in self.conversations))

    @property
    def truncated(self) -> int:
        if self.max_length is None:
            return 0
        return sum(1 for n in self.token_lengths if n > self.max_length)

    def token_stats(self) -> dict[str, float]:
        if not self.token_lengths:
            return {}
        ordered = sorted(self.token_lengths)

        def pct(q: float) -> int:
            return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

        return {
            "min": ordered[0],
            "max": ordered[-1],
            "mean": round(sum(ordered) / len(ordered), 1),
            "p50": pct(0.5),
            "p95": pct(0.95),
            "total": sum(ordered),
        }

    def raise_for_errors(self) -> None:
        """Raise the first error, mentioning how many more there are."""
        if not self.errors:
            if not self.conversations:
                raise DataError("no records found", path=self.path)
            return
        first = self.errors[0]
        if len(self.errors) > 1:
            more = len(self.errors) - 1
            raise DataError(
                f"{first.reason} (and {more} more error{'s' if more > 1 else ''})",
                path=first.path,
                line=first.line,
                field=first.field,
            )
        raise first

    def to_dict(self) -> dict[str, Any]:
        records = len(self.conversations) + len(self.errors)
        return {
            "path": self.path,
            "container": self.container,
            "ok": self.ok,
            "records": records,
            "valid_records": len(self.conversations),
            "formats": self.formats,
            "record_formats": [{"line": c.line, "index": c.index, "format": c.format} for c in self.conversations],
            "errors": [{"line": e.line, "field": e.field, "message": e.reason} for e in self.errors],
            "tokens": {**self.token_stats(), "exact": self.tokens_exact},
            "max_length": self.max_length,
            "truncated": self.truncated,
            "truncated_share": round(self.truncated / len(self.token_lengths), 4) if self.token_lengths else 0.0,
        }


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Rough count when no tokenizer is at hand: about four characters per token, plus per-message framing."""
    return sum(len(m["content"]) // 4 + 4 for m in messages)


def _build(raw: RawData, counter: TokenCounter | None, max_length: int | None) -> ValidationReport:
    report = ValidationReport(
        path=raw.path,
        container=raw.container,
        errors=list(raw.errors),
        tokens_exact=counter is not None,
        max_length=max_length,
    )
    for rec in raw.records:
        try:
            conv = to_conversation(rec.value, path=raw.path, line=rec.line, index=rec.index)
        except DataError as err:
            if len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append(err)
            continue
        report.conversations.append(conv)
        report.token_lengths.append((counter or estimate_tokens)(conv.messages))
    report.errors.sort(key=lambda e: e.line or 0)
    return report


def validate_file(
    path: str | Path, *, token_counter: TokenCounter | None = None, max_length: int | None = None
) -> ValidationReport:
    """Validate a dataset file. File-level problems (empty, BOM, not UTF-8, broken array) raise ``DataError``."""
    return _build(read_file(path), token_counter, max_length)


def validate_raw(
    raw: RawData, *, token_counter: TokenCounter | None = None, max_length: int | None = None
) -> ValidationReport:
    """Validate already-parsed data (``read_file``/``parse_bytes``), e.g. after checking ``raw.errors`` first."""
    return _build(raw, token_counter, max_length)


def validate_bytes(
    raw: bytes, *, name: str = "<upload>", token_counter: TokenCounter | None = None, max_length: int | None = None
) -> ValidationReport:
    return _build(parse_bytes(raw, name), token_counter, max_length)


def load_conversations(path: str | Path) -> list[Conversation]:
    """All records of a file as conversations; raises ``DataError`` on the first bad record."""
    report = validate_file(path)
    report.raise_for_errors()
    return report.conversations
