"""Resumable training checkpoints in the object store: ``jobs/<job_id>/checkpoints/step-N/``.

Each checkpoint is uploaded, verified, and then committed by ``checkpoint.json`` (its files, sizes and sha256),
written last. A checkpoint without that file is a crash leftover and is never resumed from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sage_ft.storage.base import ObjectStore
from sage_ft.storage.manifest import FileEntry, Manifest, fetch_verified, read_manifest, upload_verified

COMMIT = "checkpoint.json"
_STEP = re.compile(r"^step-(\d+)$")
CHECKPOINT_NAME = re.compile(r"^(ft:.+):ckpt-step-(\d{1,12})$")
# what serving and a follow-up job need from an HF checkpoint: the adapter and the tokenizer, never the pickled
# optimizer, scheduler, RNG or training-args files, nor a nested adapter folder
_ADAPTER_FILE = re.compile(r"^[^/]+\.(safetensors|json|jinja|txt|model)$")
_NOT_ADAPTER = frozenset({"trainer_state.json", COMMIT})


def checkpoint_model_name(model: str, step: int) -> str:
    """``<fine-tuned model>:ckpt-step-<n>``, the ``fine_tuned_model_checkpoint`` OpenAI shows."""
    return f"{model}:ckpt-step-{step}"


def adapter_entries(entries: dict[str, FileEntry]) -> dict[str, FileEntry]:
    return {k: v for k, v in entries.items() if _ADAPTER_FILE.match(k) and k not in _NOT_ADAPTER}


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


def _commit(store: ObjectStore, job_id: str, step: int) -> dict[str, FileEntry] | None:
    key = checkpoint_prefix(job_id, step) + COMMIT
    if not store.exists(key):
        return None
    body = json.loads(store.get_bytes(key))
    return {k: FileEntry(v["size"], v["sha256"]) for k, v in body["files"].items()}


def fetch_checkpoint_adapter(store: ObjectStore, job_id: str, step: int, dest: Path) -> Path:
    """Only the adapter and tokenizer files of committed step ``step``, as an adapter directory at ``dest``."""
    entries = _commit(store, job_id, step)
    if entries is None:
        raise FileNotFoundError(f"checkpoint {step} of {job_id} is not in the store")
    return fetch_verified(store, checkpoint_prefix(job_id, step), adapter_entries(entries), dest)


def checkpoint_manifest(store: ObjectStore, model: str, step: int) -> Manifest | None:
    """A checkpoint read as a model of its own: the adapter is the checkpoint's files where the job uploaded them
    (nothing is copied), the rest is its model's. None unless ``model`` is published with a job that committed
    ``step``."""
    parent = read_manifest(store, model)
    if parent is None or not parent.job_id:
        return None
    entries = _commit(store, parent.job_id, step)
    if entries is None:
        return None
    return Manifest(
        name=checkpoint_model_name(model, step), base_model=parent.base_model, created_at=parent.created_at,
        files={f"adapter/{k}": v for k, v in adapter_entries(entries).items()},
        root=checkpoint_prefix(parent.job_id), locations={"adapter": f"step-{step}/"}, job_id=parent.job_id,
        training=parent.training, metrics={"step": step}, attempt=parent.attempt, parent=parent.parent,
        checkpoint_of=parent.name,
    )  # fmt: skip


def delete_checkpoints(store: ObjectStore, job_id: str) -> int:
    return store.delete_prefix(checkpoint_prefix(job_id))
