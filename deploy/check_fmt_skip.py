"""Fails when ruff's skip-formatting marker has no reason: ``ruff format`` owns the layout.

The one exception is a table of data that reads better aligned. Its statement carries the marker, and the comment line
right above it says so, starting with ``# aligned:``. Run by ``make lint``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOTS = ("shared", "services", "tests", "benchmarks", "deploy")
MARKER = "# fmt" + ": skip"  # spelled in two parts, so this file holds no marker of its own


def unexplained(root: Path) -> list[str]:
    found = []
    for top in ROOTS:
        for path in sorted((root / top).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, start=1):
                if MARKER not in line or line.lstrip().startswith("#"):
                    continue
                start = _statement_start(lines, number - 1)
                before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
                if not before.startswith("# aligned:"):
                    found.append(f"{path.relative_to(root)}:{number}")
    return found


def _statement_start(lines: list[str], index: int) -> int:
    """The first line of the bracketed statement ending at ``index`` (where its brackets open)."""
    depth = 0
    for i in range(index, -1, -1):
        code = lines[i].split("#", 1)[0]
        depth += sum(code.count(c) for c in ")]}") - sum(code.count(c) for c in "([{")
        if depth <= 0:
            return i
    return 0


def main() -> int:
    found = unexplained(Path(__file__).resolve().parents[1])
    for where in found:
        print(f"{where}: '{MARKER}' without an '# aligned:' comment above it saying why the table reads better aligned")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
