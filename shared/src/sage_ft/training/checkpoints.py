"""Finding the checkpoint to resume from: newest by numeric step, never by string order."""

from __future__ import annotations

import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(name: str) -> int | None:
    match = _CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


def latest_checkpoint(directory: str | Path) -> Path | None:
    """``checkpoint-1000`` beats ``checkpoint-500``. Only complete checkpoints (with trainer_state.json) count."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found = [
        (step, p)
        for p in root.iterdir()
        if p.is_dir() and (step := checkpoint_step(p.name)) is not None and (p / "trainer_state.json").exists()
    ]
    return max(found)[1] if found else None
