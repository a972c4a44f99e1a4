"""Resumable training checkpoints in the object store, fenced like manifests.

Layout under ``jobs/<job_id>/checkpoints/``:

- ``attempt-<n>/step-<N>/...``: the files attempt ``n`` uploaded for step ``N`` (each attempt writes only under its
  own keys, so a stale attempt can never overwrite what a live one wrote);
- ``index.json``: the commit point of every checkpoint. It holds the attempt that owns the job's checkpoints
  (``epoch``) and, per step, the attempt that committed it with its files' sizes and sha256.

An attempt raises ``epoch`` to its own number before it reads what to resume from (``begin_attempt``), and commits a
checkpoint by rewriting the index conditionally on the version it read, only while ``epoch`` is still its own and its
lease still holds (``commit_checkpoint``). A stale attempt that wakes up after the next one began finds a higher
epoch, or an index that changed under its conditional write, and commits nothing; what it uploaded is removed.
Readers trust only the index, so uploaded but uncommitted files are never resumed from.

Checkpoints written before this layout (``step-<N>/checkpoint.json``) are still read, never written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_ft.storage.base import ObjectStore, PreconditionFailedError
from sage_ft.storage.manifest import (
    FileEntry,
    Manifest,
    PublishFencedError,
    fetch_verified,
    read_manifest,
    upload_verified,
)

INDEX = "index.json"
LEGACY_COMMIT = "checkpoint.json"
_LEGACY_STEP = re.compile(r"^step-(\d+)$")
CHECKPOINT_NAME = re.compile(r"^(ft:.+):ckpt-step-(\d{1,12})$")
# what serving and a follow-up job need from an HF checkpoint: the adapter and the tokenizer, never the pickled
# optimizer, scheduler, RNG or training-args files, nor a nested adapter folder
_ADAPTER_FILE = re.compile(r"^[^/]+\.(safetensors|json|jinja|txt|model)$")
_NOT_ADAPTER = frozenset({"trainer_state.json", LEGACY_COMMIT})
_COMMIT_TRIES = 5


@dataclass(frozen=True)
class Checkpoint:
    step: int
    attempt: int | None  # None: written before checkpoints were fenced
    location: str  # relative to the job's checkpoint prefix, e.g. "attempt-2/step-8/"
    files: dict[str, FileEntry]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files.values())


def checkpoint_model_name(model: str, step: int) -> str:
    """``<fine-tuned model>:ckpt-step-<n>``, the ``fine_tuned_model_checkpoint`` OpenAI shows."""
    return f"{model}:ckpt-step-{step}"


def adapter_entries(entries: dict[str, FileEntry]) -> dict[str, FileEntry]:
    return {k: v for k, v in entries.items() if _ADAPTER_FILE.match(k) and k not in _NOT_ADAPTER}


def checkpoint_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def attempt_location(attempt: int, step: int) -> str:
    return f"attempt-{attempt}/step-{step}/"


def _files(raw: dict[str, Any]) -> dict[str, FileEntry]:
    return {k: FileEntry(int(v["size"]), str(v["sha256"])) for k, v in raw.items()}


def _read_index(store: ObjectStore, job_id: str) -> tuple[dict[str, Any], str | None]:
    current = store.read_versioned(checkpoint_prefix(job_id) + INDEX)
    if current is None:
        return {"epoch": 0, "steps": {}}, None
    return json.loads(current[0]), current[1]


def _write_index(store: ObjectStore, job_id: str, index: dict[str, Any], token: str | None) -> None:
    store.put_if(checkpoint_prefix(job_id) + INDEX, json.dumps(index, sort_keys=True).encode(), token)


def _legacy(store: ObjectStore, job_id: str) -> dict[int, Checkpoint]:
    out = {}
    prefix = checkpoint_prefix(job_id)
    for obj in store.list_objects(prefix):
        parts = obj.key[len(prefix) :].split("/")
        if len(parts) == 2 and parts[1] == LEGACY_COMMIT and (m := _LEGACY_STEP.match(parts[0])):
            body = json.loads(store.get_bytes(obj.key))
            out[int(m.group(1))] = Checkpoint(int(m.group(1)), None, f"{parts[0]}/", _files(body["files"]))
    return out


def committed(store: ObjectStore, job_id: str) -> dict[int, Checkpoint]:
    """Every committed checkpoint of the job by step: those in the index, and any of the older layout."""
    index, token = _read_index(store, job_id)
    out = {} if token is not None else _legacy(store, job_id)
    for step, entry in index["steps"].items():
        attempt = None if entry["attempt"] is None else int(entry["attempt"])
        out[int(step)] = Checkpoint(int(step), attempt, entry["location"], _files(entry["files"]))
    return dict(sorted(out.items()))


def committed_steps(store: ObjectStore, job_id: str) -> list[int]:
    return list(committed(store, job_id))


def begin_attempt(store: ObjectStore, job_id: str, attempt: int) -> Checkpoint | None:
    """Make ``attempt`` the only one that may commit checkpoints of the job from now on, and return the newest
    committed checkpoint to resume from (None: start from scratch). A later attempt already began: fenced."""
    for _ in range(_COMMIT_TRIES):
        index, token = _read_index(store, job_id)
        if index["epoch"] > attempt:
            raise PublishFencedError(f"checkpoints of {job_id}: attempt {index['epoch']} began after {attempt}")
        if token is None:  # carry checkpoints of the older layout into the index, so they stay resumable
            index["steps"] = {str(s): _entry(c) for s, c in _legacy(store, job_id).items()}
        if index["epoch"] == attempt and token is not None:
            break
        index["epoch"] = attempt
        try:
            _write_index(store, job_id, index, token)
            break
        except PreconditionFailedError:
            continue
    else:
        raise PreconditionFailedError(f"checkpoints of {job_id}: the index kept changing")
    steps = committed(store, job_id)
    return steps[max(steps)] if steps else None


def _entry(ckpt: Checkpoint) -> dict[str, Any]:
    files = {k: {"size": v.size, "sha256": v.sha256} for k, v in ckpt.files.items()}
    return {"attempt": ckpt.attempt, "location": ckpt.location, "files": files}


def commit_checkpoint(
    store: ObjectStore, job_id: str, attempt: int, step: int, local: Path, fence: Callable[[], bool]
) -> Checkpoint:
    """Upload ``local`` (an HF ``checkpoint-N`` directory) under this attempt's keys, verify it, then commit it in
    the index: only while the index's epoch is ``attempt`` and ``fence()`` says the lease is still ours, by a write
    conditional on the index version read before the fence. Anything else raises ``PublishFencedError`` (or
    ``PreconditionFailedError``) and removes the upload."""
    location = attempt_location(attempt, step)
    prefix = checkpoint_prefix(job_id) + location
    try:
        ckpt = Checkpoint(step, attempt, location, upload_verified(store, prefix, local))
        for _ in range(_COMMIT_TRIES):
            index, token = _read_index(store, job_id)
            if index["epoch"] != attempt:
                owner = f"attempt {index['epoch']} owns the job's checkpoints, not {attempt}"
                raise PublishFencedError(f"checkpoint {step} of {job_id}: {owner}; nothing committed")
            if not fence():
                raise PublishFencedError(f"checkpoint {step} of {job_id}: the lease moved on; nothing committed")
            index["steps"][str(step)] = _entry(ckpt)
            try:
                _write_index(store, job_id, index, token)  # the commit point
                return ckpt
            except PreconditionFailedError:
                continue  # changed under us: read again (a new epoch is then refused above)
        raise PreconditionFailedError(f"checkpoint {step} of {job_id}: the index kept changing")
    except BaseException:
        store.delete_prefix(prefix)
        raise


def fetch_checkpoint(store: ObjectStore, job_id: str, ckpt: Checkpoint, dest: Path) -> Path:
    """Download a committed checkpoint into ``dest`` (verified, atomic)."""
    return fetch_verified(store, checkpoint_prefix(job_id) + ckpt.location, ckpt.files, dest)


def fetch_checkpoint_adapter(store: ObjectStore, job_id: str, step: int, dest: Path) -> Path:
    """Only the adapter and tokenizer files of committed step ``step``, as an adapter directory at ``dest``."""
    ckpt = committed(store, job_id).get(step)
    if ckpt is None:
        raise FileNotFoundError(f"checkpoint {step} of {job_id} is not in the store")
    return fetch_verified(store, checkpoint_prefix(job_id) + ckpt.location, adapter_entries(ckpt.files), dest)


def checkpoint_manifest(store: ObjectStore, model: str, step: int) -> Manifest | None:
    """A checkpoint read as a model of its own: the adapter is the checkpoint's files where the job uploaded them
    (nothing is copied), the rest is its model's. None unless ``model`` is published with a job that committed
    ``step``."""
    parent = read_manifest(store, model)
    if parent is None or not parent.job_id:
        return None
    ckpt = committed(store, parent.job_id).get(step)
    if ckpt is None:
        return None
    return Manifest(
        name=checkpoint_model_name(model, step),
        base_model=parent.base_model,
        created_at=parent.created_at,
        files={f"adapter/{k}": v for k, v in adapter_entries(ckpt.files).items()},
        root=checkpoint_prefix(parent.job_id),
        locations={"adapter": ckpt.location},
        job_id=parent.job_id,
        training=parent.training,
        metrics={"step": step},
        attempt=parent.attempt,
        parent=parent.parent,
        checkpoint_of=parent.name,
    )


def remove_uncommitted(store: ObjectStore, job_id: str) -> int:
    """Remove uploads no index entry points at (a stale or killed attempt's); call it once the job is final."""
    prefix = checkpoint_prefix(job_id)
    live = tuple(prefix + c.location for c in committed(store, job_id).values())
    return store.delete_unlisted(prefix, (prefix + INDEX, *live))


def delete_checkpoints(store: ObjectStore, job_id: str) -> int:
    return store.delete_prefix(checkpoint_prefix(job_id))
