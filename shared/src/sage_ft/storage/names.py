"""Model names as users give them: a published model, a checkpoint of one (``<model>:ckpt-step-<n>``), or an alias.

It sits above both commit points (``manifest`` for models, ``checkpoints`` for a job's checkpoints), which know
nothing of each other's names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from sage_ft.storage.base import ObjectStore, StorageError
from sage_ft.storage.checkpoints import CHECKPOINT_NAME, checkpoint_manifest
from sage_ft.storage.manifest import CorruptManifestError, Manifest, fetch_verified, list_models, read_manifest


def read_model(store: ObjectStore, name: str) -> Manifest | None:
    """The published model ``name``; a checkpoint name reads as a model whose adapter is that checkpoint's, for as
    long as its model is published."""
    manifest = read_manifest(store, name)
    if manifest is None and (match := CHECKPOINT_NAME.match(name)):
        return checkpoint_manifest(store, match.group(1), int(match.group(2)))
    return manifest


def fetch_part(store: ObjectStore, name: str, part: str, dest: Path) -> Path:
    """Download one part of a published model into ``dest``, verifying every file against the manifest.

    The part appears at ``dest`` only once every file checked out (downloaded aside, then renamed).
    """
    manifest = read_model(store, name)
    if manifest is None:
        raise StorageError(f"model '{name}' is not published (no manifest)")
    wanted = {k.split("/", 1)[1]: v for k, v in manifest.files.items() if k.split("/", 1)[0] == part}
    if not wanted:
        raise StorageError(f"model '{name}' has no '{part}' part (has: {', '.join(manifest.parts)})")
    return fetch_verified(store, manifest.part_prefix(part), wanted, dest)


def resolve_model_name(store: ObjectStore, name_or_alias: str) -> Manifest | None:
    """A published model by name, or else the newest one carrying ``name_or_alias`` as its alias."""
    try:
        direct = read_model(store, name_or_alias)
    except CorruptManifestError:
        raise  # asked for by name: say what is wrong with it
    except StorageError:
        direct = None
    if direct is not None:
        return direct
    matches = [m for m in list_models(store) if m.alias == name_or_alias]
    return max(matches, key=lambda m: m.created_at) if matches else None


def closest_names(store: ObjectStore, name: str, limit: int = 3, also: Iterable[str] = ()) -> list[str]:
    """Published names and aliases (and ``also``: installed base models) that look like ``name``, for a helpful
    "not found" message."""
    known = {n for m in list_models(store) for n in (m.name, m.alias) if n} | set(also)
    return difflib.get_close_matches(name, sorted(known), n=limit, cutoff=0.4)


def not_found_message(store: ObjectStore, name: str, also: Iterable[str] = ()) -> str:
    close = closest_names(store, name, also=also)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"The model '{name}' does not exist or is not published.{hint}"
