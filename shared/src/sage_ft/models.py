"""Models installed on this machine: a directory per model under the models root (``$SAGE_HOME/models``)."""

from __future__ import annotations

import re
from pathlib import Path

LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # one path segment: no '/', no '..' prefix


def local_model_dir(models_root: Path, name: str) -> Path | None:
    """The directory of local model ``name`` under ``models_root`` if it exists (names cannot contain '/')."""
    if not LOCAL_NAME.match(name):
        return None
    path = models_root / name
    return path if (path / "config.json").is_file() else None


def installed_models(models_root: Path) -> list[str]:
    """The names of the models installed under ``models_root`` (each a directory with a ``config.json``)."""
    if not models_root.is_dir():
        return []
    return sorted(p.name for p in models_root.iterdir() if LOCAL_NAME.match(p.name) and (p / "config.json").is_file())
