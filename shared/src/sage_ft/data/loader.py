"""Safe reading of dataset files (JSON array or JSONL) into raw records with their line numbers.

Hostile input is expected: BOMs, non-UTF-8 bytes, nesting bombs and integers with thousands of digits are
reported as ``DataError`` naming the line, never as a traceback or a hang.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_ft.errors import DataError

MAX_DEPTH = 16
MAX_INT_DIGITS = 18
MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class RawRecord:
    line: int  # 1-based line where the record starts
    index: int  # 0-based record index
    value: Any


@dataclass
class RawData:
    path: str
    container: str  # "jsonl" or "json"
    records: list[RawRecord] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _RejectedValueError(f"integer with {digits} digits (at most {MAX_INT_DIGITS} allowed)")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise _RejectedValueError(f"{name} is not valid JSON")


class _RejectedValueError(ValueError):
    pass


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _decode_at(text: str, pos: int, path: str, line: int) -> tuple[Any, int]:
    """Decode one JSON value starting at ``pos``; return it and the end offset."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except _RejectedValueError as err:
        raise DataError(str(err), path=path, line=line) from None
    except RecursionError:
        raise DataError(f"JSON nested too deeply (limit {MAX_DEPTH} levels)", path=path, line=line) from None
    except json.JSONDecodeError as err:
        # ``line`` is where the value starts; count the lines from there to the error (err.lineno counts from the
        # start of ``text``, which is the whole file for a JSON array and one line for JSONL)
        at = line + text.count("\n", pos, err.pos)
        raise DataError(f"malformed JSON: {err.msg} (column {err.colno})", path=path, line=at) from None
    except ValueError as err:  # e.g. int() limits inside the decoder
        raise DataError(f"malformed JSON: {err}", path=path, line=line) from None
    if not _depth_ok(value):
        raise DataError(f"JSON nested too deeply (limit {MAX_DEPTH} levels)", path=path, line=line)
    return value, end


def decode_text(raw: bytes, path: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raise DataError(
            "file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM", path=path, line=1
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError("file is UTF-16 encoded; save it as UTF-8", path=path, line=1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        bad = raw[err.start : err.start + 1].hex()
        raise DataError(f"not valid UTF-8 (byte 0x{bad}); save the file as UTF-8", path=path, line=line) from None


def parse_bytes(raw: bytes, path: str = "<data>") -> RawData:
    """Parse a JSON array or JSONL payload. File-level problems raise; per-record problems are collected."""
    text = decode_text(raw, path)
    stripped = text.lstrip()
    if not stripped:
        raise DataError("file is empty; expected a JSON array or JSONL records", path=path)
    if stripped[0] == "[":
        return _parse_array(text, path)
    if stripped[0] != "{":
        line = text[: len(text) - len(stripped)].count("\n") + 1
        raise DataError("expected a JSON array or JSONL records (each line a JSON object)", path=path, line=line)
    return _parse_jsonl(text, path)


def _parse_jsonl(text: str, path: str) -> RawData:
    data = RawData(path=path, container="jsonl")
    # JSON Lines separates records by "\n" only; str.splitlines would also split inside strings at U+0085, U+2028 ...
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            value, end = _decode_at(line, len(line) - len(line.lstrip()), path, number)
            if line[end:].strip():
                raise DataError(
                    "malformed JSON: extra data after the record (one object per line)", path=path, line=number
                )
        except DataError as err:
            data.errors.append(err)
            continue
        data.records.append(RawRecord(line=number, index=len(data.records), value=value))
    return data


def _parse_array(text: str, path: str) -> RawData:
    """Walk the array element by element so each record keeps the line it starts on."""
    data = RawData(path=path, container="json")
    pos = text.index("[") + 1
    n = len(text)
    index = 0

    def skip_ws(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        if text[pos + 1 :].strip():
            raise DataError("malformed JSON: extra data after the array", path=path, line=text.count("\n", 0, pos) + 1)
        return data
    while True:
        line = text.count("\n", 0, pos) + 1
        value, pos = _decode_at(text, pos, path, line)
        data.records.append(RawRecord(line=line, index=index, value=value))
        index += 1
        pos = skip_ws(pos)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            if text[pos + 1 :].strip():
                raise DataError(
                    "malformed JSON: extra data after the array", path=path, line=text.count("\n", 0, pos) + 1
                )
            return data
        raise DataError(
            "malformed JSON: expected ',' or ']' after a record", path=path, line=text.count("\n", 0, pos) + 1
        )


def read_file(path: str | Path, name: str | None = None) -> RawData:
    """Parse a dataset file. Errors name it ``name`` when given (an upload's own filename, never the server's
    temporary path), else its path."""
    p = Path(path)
    label = name or str(p)
    if not p.exists():
        raise DataError("file not found", path=label)
    if p.is_dir():
        raise DataError("is a directory, expected a JSON or JSONL file", path=label)
    if p.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"file is larger than {MAX_FILE_BYTES // 1024**2} MiB", path=label)
    return parse_bytes(p.read_bytes(), label)
