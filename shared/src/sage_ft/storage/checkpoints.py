"""Resumable training checkpoints in the object store: ``jobs/<job_id>/checkpoints/step-N/``.

Each checkpoint is uploaded, verified, and then committed by ``checkpoint.json`` (its files, sizes and sha256),
written last. A checkpoint without that file is a crash leftover and is never resumed from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sage_ft.storage.base import ObjectStore
from sage_ft.storage.manifest import FileEntry, fetch_verified, upload_verified

COMMIT = "checkpoint.json"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_prefix(job_id: str, step: int | None = None) -> str:
    base = f"jobs/{job_id}/checkpoints/"
    return base if step is None else f"{base}step-{step}/"


def upload_checkpoint(store: ObjectStore, job_id: str, step: int, local: Path) -> int:
    """Upload ``local`` (an HF ``checkpoint-N`` directory) as step ``step``; returns the bytes uploaded."""
    prefix = checkpoint_prefix(job_id, step)
    entries = upload_verified(store, prefix, local)
    body = {"step": step, "files": {k: {"size": v.size, "sha256": v.sha256} for k, v in entries.items()}}
    store.put_bytes(prefix + COMMIT, json.dumps(body, sort_keys=True).encode())  # the commit point
    return sum(e.size for e in entries.values())


def committed_steps(store: ObjectStore, job_id: str) -> list[int]:
    steps = []
    for obj in store.list_objects(checkpoint_prefix(job_id)):
        parts = obj.key.split("/")
        if len(parts) == 5 and parts[4] == COMMIT and (m := _STEP.match(parts[3])):
            steps.append(int(m.group(1)))
    return sorted(steps)


def fetch_checkpoint(store: ObjectStore, job_id: str, step: int, dest: Path) -> Path:
    """Download committed step ``step`` into ``dest`` (verified, atomic)."""
    prefix = checkpoint_prefix(job_id, step)
    body = json.loads(store.get_bytes(prefix + COMMIT))
    entries = {k: FileEntry(v["size"], v["sha256"]) for k, v in body["files"].items()}
    return fetch_verified(store, prefix, entries, dest)


def delete_checkpoints(store: ObjectStore, job_id: str) -> int:
    return store.delete_prefix(checkpoint_prefix(job_id))
