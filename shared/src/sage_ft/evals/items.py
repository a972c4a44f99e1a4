"""Eval data: an eval's ``item_schema`` (JSON Schema) and the JSONL rows a run grades, ``{"item": {...}}`` each.

The schema is checked when the eval is created, so a run never meets an invalid one. Rows are checked against it
before a run starts; every error names the line and the field (``line 7: item.answer: 'answer' is a required
property``), with ``jsonschema`` doing the validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sage_ft.errors import ConfigError, DataError

MAX_ERRORS = 20


def check_item_schema(schema: Any, param: str = "data_source_config.item_schema") -> set[str] | None:
    """Raise a ConfigError naming ``param`` unless ``schema`` is a valid JSON Schema for an object; returns its
    top-level property names (None when it declares none, so any field is allowed)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise ConfigError(f"{param}: must be a JSON Schema object", param=param)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        where = ".".join(str(p) for p in err.absolute_path)
        raise ConfigError(
            f"{param}{'.' + where if where else ''}: not a valid JSON Schema: {err.message}", param=param
        ) from None
    if schema.get("type", "object") != "object":
        raise ConfigError(f"{param}.type: an item is an object; the schema's type must be 'object'", param=param)
    props = schema.get("properties")
    return set(props) if isinstance(props, dict) else None


def rows_from_content(content: Any, schema: dict[str, Any] | None, param: str) -> list[dict[str, Any]]:
    """``file_content`` rows (a list of ``{"item": ...}``), checked; errors name ``param.<index>``."""
    if not isinstance(content, list) or not content:
        raise ConfigError(f"{param}: give at least one row", param=param)
    errors = [msg for i, row in enumerate(content) for msg in _row_errors(row, schema, f"{param}.{i}")]
    if errors:
        raise ConfigError("; ".join(errors[:MAX_ERRORS]), param=param)
    return [dict(row) for row in content]


def load_rows(path: str | Path, schema: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every row of a JSONL eval file; a DataError lists up to ``MAX_ERRORS`` bad lines with their fields."""
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                errors.append(f"line {number}: not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                errors.append(f"line {number}: not valid JSON ({err.msg})")
                continue
            found = list(_row_errors(row, schema, f"line {number}"))
            errors.extend(found)
            if not found:
                rows.append(row)
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise DataError("; ".join(errors[:MAX_ERRORS]) + more, path=str(path))
    if not rows:
        raise DataError('no rows: each line is {"item": {...}}', path=str(path))
    return rows


def _row_errors(row: Any, schema: dict[str, Any] | None, where: str) -> list[str]:
    if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
        return [f'{where}: each row is an object with an "item" object']
    unknown = sorted(set(row) - {"item", "sample"})
    if unknown:
        return [f'{where}: unknown key(s) {", ".join(unknown)}; a row holds "item" (and optionally "sample")']
    if schema is None:
        return []
    from jsonschema import Draft202012Validator

    out = []
    for err in sorted(Draft202012Validator(schema).iter_errors(row["item"]), key=lambda e: list(e.absolute_path)):
        field = ".".join(["item", *(str(p) for p in err.absolute_path)])
        out.append(f"{where}: {field}: {err.message}")
    return out
