"""Publishing and reading models through ``models/<name>/manifest.json``, the commit point of every artifact.

A publish uploads its parts under a key scope of its own (``models/<name>/attempts/<n>/adapter/...`` for a job's
attempt, ``merges/<id>/merged/...`` for a merge), verifies every object against the local size and sha256, and only
then switches the manifest to the new set in one conditional write (``If-Match`` the version it read; a writer that
lost a race writes nothing). Nothing is ever overwritten in place, so a reader that holds a manifest always finds
exactly the files it lists. Files no manifest points at are removed by ``collect_garbage`` once the writer knows its
publish is final. Readers trust only what a manifest lists and check each file's sha256 on the way in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sage_ft.fsutil import atomic_directory
from sage_ft.storage.base import (
    CHUNK,
    IntegrityError,
    ObjectStore,
    PreconditionFailedError,
    StorageError,
    check_key,
    sha256_file,
)

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass
class Manifest:
    name: str
    base_model: str
    files: dict[str, FileEntry]  # path relative to models/<name>/, e.g. "adapter/adapter_model.safetensors"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    updated_at: str | None = None
    job_id: str | None = None
    alias: str | None = None  # a short name (e.g. "code") the model can also be addressed by; newest wins
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)  # part -> its key scope under models/<name>/
    attempt: int | None = None  # the job attempt that published the adapter (the fencing token)
    parent: str | None = None  # the fine-tuned model (or checkpoint) this one continued from
    root: str | None = None  # key prefix of the locations (None: models/<name>/); a checkpoint's is its job's
    checkpoint_of: str | None = None  # a checkpoint: the model whose job wrote it (it is read, never written)

    @property
    def published_as(self) -> str:
        """The model name the job that made this published (a checkpoint's is its job's model)."""
        return self.checkpoint_of or self.name

    @property
    def parts(self) -> list[str]:
        return sorted({path.split("/", 1)[0] for path in self.files})

    def location(self, part: str) -> str:
        """Where ``part``'s files live, relative to ``models/<name>/`` (``<part>/`` for manifests from before
        scoped publishing)."""
        return self.locations.get(part, f"{part}/")

    def part_prefix(self, part: str) -> str:
        return (self.root or model_prefix(self.name)) + self.location(part)

    def key(self, rel: str) -> str:
        """The object key of a listed file (``adapter/adapter_config.json`` -> ``models/x/attempts/1/adapter/...``)."""
        part, rest = rel.split("/", 1)
        return self.part_prefix(part) + rest

    def to_json(self) -> bytes:
        data = asdict(self)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["files"] = {k: FileEntry(**v) for k, v in data["files"].items()}
        return cls(**data)


def check_model_name(name: str) -> str:
    if not _NAME.match(name):
        raise StorageError(f"invalid model name {name!r}: letters, digits and . _ : - only, up to 128 characters")
    return name


def model_prefix(name: str) -> str:
    return f"models/{check_model_name(name)}/"


def _remote_sha256(store: ObjectStore, key: str) -> str:
    digest = hashlib.sha256()
    with store.open(key) as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def upload_verified(store: ObjectStore, prefix: str, local: Path) -> dict[str, FileEntry]:
    """Upload every file under ``local`` to ``prefix + <relative path>`` and verify each remote copy.

    Returns the entries (keyed by relative path) to record in a manifest, which the caller writes last.
    """
    entries: dict[str, FileEntry] = {}
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        entry = FileEntry(path.stat().st_size, sha256_file(path))
        store.put_file(prefix + rel, path)
        remote = store.stat(prefix + rel)
        if remote is None or remote.size != entry.size or _remote_sha256(store, prefix + rel) != entry.sha256:
            raise IntegrityError(f"uploaded {prefix + rel} does not match the local file")
        entries[rel] = entry
    if not entries:
        raise StorageError(f"nothing to publish in {local}")
    return entries


def fetch_verified(store: ObjectStore, prefix: str, entries: dict[str, FileEntry], dest: Path, strip: str = "") -> Path:
    """Download ``entries`` into ``dest`` (their keys minus ``strip``), checking sizes and sha256; atomic."""
    with atomic_directory(dest) as tmp:
        for rel, entry in entries.items():
            local = store.get_file(prefix + rel, tmp / rel.removeprefix(strip))
            if local.stat().st_size != entry.size or sha256_file(local) != entry.sha256:
                raise IntegrityError(f"{prefix + rel} does not match its manifest (sha256 or size differs)")
    return dest


class CorruptManifestError(StorageError):
    """A model's manifest.json is unreadable: that model is hidden from listings and refused by name; no other
    model is affected."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(
            f"The model '{name}' cannot be read: its manifest.json is damaged ({why}). Publish it again, or delete it."
        )
        self.name = name


def read_manifest(store: ObjectStore, name: str) -> Manifest | None:
    """The published model ``name`` (its manifest); None if it is not published. ``names.read_model`` also reads
    checkpoint names."""
    key = model_prefix(name) + MANIFEST
    if not store.exists(key):
        return None
    try:
        return Manifest.from_json(store.get_bytes(key))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CorruptManifestError(name, f"{type(err).__name__}: {err}"[:200]) from None


class PublishFencedError(StorageError):
    """The publisher lost its right to commit (its job lease moved on): nothing it uploaded became visible."""


def publish_model(
    store: ObjectStore,
    name: str,
    parts: dict[str, Path],
    *,
    base_model: str,
    job_id: str | None = None,
    alias: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    scope: str | None = None,
    attempt: int | None = None,
    fence: Callable[[], bool] | None = None,
    parent: str | None = None,
) -> Manifest:
    """Upload ``parts`` (e.g. ``{"adapter": dir}``) under ``scope``, verify, then commit the manifest.

    ``scope`` names this publish's own key space (default ``uploads/<random>``). Parts already in the manifest and
    not given here are kept (a merge adds ``merged/`` to a published adapter). ``fence`` is asked right before the
    commit: False means the caller no longer owns the model (a stale job attempt), and nothing is committed. The
    commit is conditional on the manifest version read before the upload; if another writer committed meanwhile,
    a fenced publisher that still holds its fence commits over it, anyone else raises ``PreconditionFailedError``.
    Either way, an uncommitted publish removes its own uploads.
    """
    prefix = model_prefix(name)
    scope = (scope or f"uploads/{uuid.uuid4().hex[:12]}").strip("/")
    check_key(prefix + scope)
    try:
        current = store.read_versioned(prefix + MANIFEST)
        uploaded: dict[str, dict[str, FileEntry]] = {}
        for part, local in parts.items():
            uploaded[check_model_name(part)] = upload_verified(store, f"{prefix}{scope}/{part}/", local)
        for _ in range(3):
            if fence is not None and not fence():
                raise PublishFencedError(f"publishing {name}: the lease moved on before the commit; nothing committed")
            manifest = _next_manifest(
                name,
                current,
                uploaded,
                scope,
                base_model=base_model,
                job_id=job_id,
                alias=alias,
                training=training,
                metrics=metrics,
                attempt=attempt,
                parent=parent,
            )
            try:
                store.put_if(prefix + MANIFEST, manifest.to_json(), current[1] if current else None)  # the commit
                return manifest
            except PreconditionFailedError:
                if fence is None:
                    raise
                current = store.read_versioned(prefix + MANIFEST)  # a stale writer got in first: still ours
        raise PreconditionFailedError(f"publishing {name}: the manifest kept changing under the commit")
    except BaseException:
        store.delete_prefix(f"{prefix}{scope}/")
        raise


def _next_manifest(
    name: str,
    current: tuple[bytes, str] | None,
    uploaded: dict[str, dict[str, FileEntry]],
    scope: str,
    *,
    base_model: str,
    attempt: int | None,
    **meta: Any,
) -> Manifest:
    try:
        previous = Manifest.from_json(current[0]) if current else None
    except (ValueError, KeyError, TypeError, AttributeError):
        previous = None  # a damaged manifest is replaced whole
    files = {k: v for k, v in (previous.files if previous else {}).items() if k.split("/", 1)[0] not in uploaded}
    locations = {p: loc for p, loc in (previous.locations if previous else {}).items() if p not in uploaded}
    for part, entries in uploaded.items():
        files.update({f"{part}/{rel}": entry for rel, entry in entries.items()})
        locations[part] = f"{scope}/{part}/"
    if previous is not None:  # legacy parts (no location) keep their implicit one
        locations.update({p: previous.location(p) for p in previous.parts if p not in locations})
    manifest = Manifest(
        name=name,
        base_model=base_model,
        files=files,
        locations=locations,
        job_id=meta["job_id"] or (previous.job_id if previous else None),
        alias=meta["alias"] or (previous.alias if previous else None),
        training=meta["training"] or (previous.training if previous else {}),
        metrics=meta["metrics"] or (previous.metrics if previous else {}),
        attempt=previous.attempt if attempt is None and previous else attempt,
        parent=meta["parent"] or (previous.parent if previous else None),
    )
    if previous is not None:
        manifest.created_at = previous.created_at
        manifest.updated_at = datetime.now(UTC).isoformat()
    return manifest


def collect_garbage(store: ObjectStore, name: str) -> int:
    """Remove every object under ``models/<name>/`` that the committed manifest does not point at: superseded
    attempts, uncommitted uploads of crashed publishers. Call it only once the publish is final (the job holds
    ``succeeded``), never while another publisher of the same model may be uploading."""
    manifest = read_manifest(store, name)
    if manifest is None:
        return 0
    prefix = model_prefix(name)
    live = tuple(prefix + manifest.location(p) for p in manifest.parts)
    return store.delete_unlisted(prefix, (prefix + MANIFEST, *live))


def list_models(store: ObjectStore) -> list[Manifest]:
    """Every published model (one with a manifest); unpublished leftovers are invisible."""
    out = []
    for obj in store.list_objects("models/"):
        parts = obj.key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST:
            try:
                manifest = read_manifest(store, parts[1])
            except CorruptManifestError as err:
                log.warning("%s", err)  # one damaged model never takes the listing down
                continue
            if manifest is not None:
                out.append(manifest)
    return out


def delete_model(store: ObjectStore, name: str) -> int:
    """Unpublish (manifest first, so readers stop trusting it at once), then remove the files."""
    prefix = model_prefix(name)
    store.delete(prefix + MANIFEST)
    return store.delete_prefix(prefix)
