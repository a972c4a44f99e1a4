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
from sage_ft.data.preference import Preference, is_preference, to_preference
from sage_ft.data.reinforcement import Prompt, is_prompt, to_prompt
from sage_ft.errors import DataError

TokenCounter = Callable[[list[dict[str, Any]]], int]
_KIND_NAMES = {"preference": "preference record", "prompts": "prompt row", "supervised": "supervised record"}
MAX_REPORTED_ERRORS = 50


@dataclass
class ValidationReport:
    path: str
    container: str
    conversations: list[Conversation] = field(default_factory=list)
    preferences: list[Preference] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)  # RFT rows: a prompt and the grader's item fields
    errors: list[DataError] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)
    tokens_exact: bool = False
    max_length: int | None = None
    side_lengths: dict[str, list[int]] = field(default_factory=dict)  # preference files: prompt, chosen, rejected

    @property
    def records(self) -> list[Conversation | Preference | Prompt]:
        return [*self.conversations, *self.preferences, *self.prompts]

    @property
    def kind(self) -> str:
        """``preference`` (pairs, for DPO), ``prompts`` (for reinforcement fine-tuning) or ``supervised``
        (conversations, for SFT)."""
        return "preference" if self.preferences else "prompts" if self.prompts else "supervised"

    def item_fields(self) -> tuple[list[str], dict[str, int]]:
        """RFT rows: the item fields every row has, and for each field only some rows have, the first line
        without it (what a grader's template may read, and where it would fail)."""
        every = set.intersection(*(set(p.item) for p in self.prompts)) if self.prompts else set()
        some = set().union(*(set(p.item) for p in self.prompts)) - every
        missing = {f: next(p.line for p in self.prompts if f not in p.item) for f in sorted(some)}
        return sorted(every), missing

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.records)

    @property
    def formats(self) -> dict[str, int]:
        return dict(Counter(c.format for c in self.records))

    @property
    def truncated(self) -> int:
        if self.max_length is None:
            return 0
        return sum(1 for n in self.token_lengths if n > self.max_length)

    def token_stats(self, lengths: list[int] | None = None) -> dict[str, float]:
        lengths = self.token_lengths if lengths is None else lengths
        if not lengths:
            return {}
        ordered = sorted(lengths)

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
            if not self.records:
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
        records = len(self.records) + len(self.errors)
        return {
            "path": self.path,
            "container": self.container,
            "ok": self.ok,
            "kind": self.kind,
            "records": records,
            "valid_records": len(self.records),
            "formats": self.formats,
            "record_formats": [{"line": c.line, "index": c.index, "format": c.format} for c in self.records],
            "errors": [{"line": e.line, "field": e.field, "message": e.reason} for e in self.errors],
            "tokens": {**self.token_stats(), "exact": self.tokens_exact},
            "max_length": self.max_length,
            "truncated": self.truncated,
            "truncated_share": round(self.truncated / len(self.token_lengths), 4) if self.token_lengths else 0.0,
            **(
                {"sides": {side: self.token_stats(n) for side, n in self.side_lengths.items()}}
                if self.preferences
                else {}
            ),
            **(self._item_report() if self.prompts else {}),
        }

    def _item_report(self) -> dict[str, Any]:
        every, missing = self.item_fields()
        return {"item_fields": every, "item_fields_missing": missing}


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
    count = counter or estimate_tokens
    first: dict[str, int] = {}  # the line of the first record of each kind
    for rec in raw.records:
        kind = "preference" if is_preference(rec.value) else "prompts" if is_prompt(rec.value) else "supervised"
        first.setdefault(kind, rec.line)
        pair = kind == "preference"
        try:
            ruling = min(first, key=lambda k: first[k])
            if kind != ruling:
                raise DataError(
                    f"a {_KIND_NAMES[kind]} in a file of {_KIND_NAMES[ruling]}s (line {first[ruling]}); one kind "
                    "per file: preference pairs for DPO, prompts for reinforcement, conversations for SFT",
                    path=raw.path,
                    line=rec.line,
                )
            if kind == "prompts":
                report.prompts.append(to_prompt(rec.value, set(), raw.path, rec.line, rec.index))
                report.token_lengths.append(count(report.prompts[-1].messages))
                continue
            if pair:
                pref = to_preference(rec.value, path=raw.path, line=rec.line, index=rec.index)
            else:
                conv = to_conversation(rec.value, path=raw.path, line=rec.line, index=rec.index)
        except DataError as err:
            if len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append(err)
            continue
        if pair:
            report.preferences.append(pref)
            sides = {
                "prompt": count(pref.prompt),
                "chosen": count([{"role": "assistant", "content": pref.chosen}]),
                "rejected": count([{"role": "assistant", "content": pref.rejected}]),
            }
            for side, n in sides.items():
                report.side_lengths.setdefault(side, []).append(n)
            report.token_lengths.append(sides["prompt"] + max(sides["chosen"], sides["rejected"]))
        else:
            report.conversations.append(conv)
            report.token_lengths.append(count(conv.messages))
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
    """All records of a file as conversations; raises ``DataError`` on the first bad record, or if the file holds
    preference pairs (those train with DPO)."""
    report = validate_file(path)
    report.raise_for_errors()
    if report.kind == "preference":
        raise DataError(
            "holds preference pairs (chosen/rejected), which fit method 'dpo', not supervised fine-tuning",
            path=str(path),
        )
    if report.kind == "prompts":
        first = report.prompts[0].line
        raise DataError(
            "has no assistant message to learn from: these are prompts without answers (OpenAI's RFT rows), which "
            "fit method 'reinforcement', not supervised fine-tuning",
            path=str(path),
            line=first,
            field="messages",
        )
    return report.conversations


def load_preferences(path: str | Path) -> list[Preference]:
    """All records of a file as preference pairs; raises ``DataError`` on the first bad record, or if the file holds
    conversations (those train with supervised fine-tuning)."""
    report = validate_file(path)
    report.raise_for_errors()
    if report.kind != "preference":
        held = (
            "prompts without answers, which fit method 'reinforcement'"
            if report.kind == "prompts"
            else ("supervised records (conversations), which fit method 'supervised'")
        )
        raise DataError(f"holds {held}, not DPO preference pairs", path=str(path))
    return report.preferences
