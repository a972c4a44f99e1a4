"""Small built-in datasets for the quickstart tasks. ``custom`` has none: it needs the user's data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sage_ft.errors import DataError

BUILTIN_TASKS = ("code", "qa", "chat", "instruction")
TASKS = (*BUILTIN_TASKS, "custom")


def builtin_dataset_path(task: str) -> Path:
    if task == "custom":
        raise DataError("task 'custom' has no built-in dataset; pass your own data file")
    if task not in BUILTIN_TASKS:
        raise DataError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    ref = resources.files("sage_ft.data") / "builtin" / f"{task}.jsonl"
    return Path(str(ref))
