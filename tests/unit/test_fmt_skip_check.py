"""``make lint``'s check on ruff's skip-formatting marker: refused without an ``# aligned:`` reason above its
statement (one line or several), accepted with one, and the repository itself has none unexplained."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_fmt_skip", ROOT / "deploy" / "check_fmt_skip.py")
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)
MARK = check.MARKER


def write(root: Path, text: str) -> None:
    (root / "shared").mkdir(parents=True, exist_ok=True)
    (root / "shared" / "table.py").write_text(text)


def test_a_marker_without_a_reason_is_refused_and_one_with_a_reason_passes(tmp_path: Path) -> None:
    write(tmp_path, f"x = 1\nT = {{\n    'a': 1,\n}}  {MARK}\ny = 2  {MARK}\n")
    assert check.unexplained(tmp_path) == ["shared/table.py:4", "shared/table.py:5"]
    write(tmp_path, f"x = 1\n# aligned: the columns line up\nT = {{\n    'a': 1,\n}}  {MARK}\n")
    assert check.unexplained(tmp_path) == []


def test_the_repository_has_no_unexplained_marker() -> None:
    assert check.unexplained(ROOT) == []
