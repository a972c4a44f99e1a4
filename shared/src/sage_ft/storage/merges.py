"""A merge's failure, recorded where serving looks for it (``merges/<model>.failed.json``), so a deploy waiting for
merged weights fails at once with the worker's reason instead of waiting out its timeout."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from sage_ft.storage.base import ObjectNotFoundError, ObjectStore
from sage_ft.storage.manifest import check_model_name


def _key(model: str) -> str:
    return f"merges/{check_model_name(model)}.failed.json"


def record_merge_failure(store: ObjectStore, model: str, error: str, worker: str, code: str = "merge_failed") -> None:
    """``code``: ``checksum_mismatch`` when the adapter's bytes were not the published ones, else ``merge_failed``."""
    body = {"model": model, "error": error[:2000], "worker": worker, "code": code, "at": time.time()}
    store.put_bytes(_key(model), json.dumps(body).encode())


def merge_failure(store: ObjectStore, model: str) -> dict[str, Any] | None:
    try:
        data = json.loads(store.get_bytes(_key(model)))
    except (ObjectNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clear_merge_failure(store: ObjectStore, model: str) -> None:
    with contextlib.suppress(ObjectNotFoundError):
        store.delete(_key(model))
