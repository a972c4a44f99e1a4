"""A local retrieval index over text and markdown files (BM25 via ``rank-bm25``: built offline, no torch, no network).

``sage-ft index build NAME PATH...`` splits each file into passages of a few lines, remembers where each came from
(file and line range), and stores the index as JSON under ``~/.sage/indexes/NAME.json``. ``search`` scores
passages with Okapi BM25 (the ``rank-bm25`` package).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from sage_ft_cli.client import CLIError

SUFFIXES = {".md", ".markdown", ".txt", ".rst"}
_WORD = re.compile(r"[a-z0-9]+")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
K1, B = 1.5, 0.75


@dataclass
class Passage:
    source: str
    start_line: int
    end_line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.source}:{self.start_line}-{self.end_line}"


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def split(path: Path, max_lines: int = 12) -> list[Passage]:
    """Passages of up to ``max_lines`` lines, broken at blank lines (not right after a heading)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    out: list[Passage] = []
    start, buf = 0, list[str]()
    for i, line in enumerate(lines):
        if not buf:
            start = i
        if line.strip():
            buf.append(line)
        only_headings = all(b.lstrip().startswith("#") for b in buf)  # a heading stays with what follows it
        blank_break = not line.strip() and not only_headings
        if buf and (blank_break or len(buf) >= max_lines or i == len(lines) - 1):
            out.append(Passage(str(path), start + 1, i + 1, "\n".join(buf)))
            buf = []
    return out


class Index:
    """Okapi BM25 over the passages, through ``rank-bm25`` (scores are the package's, not hand-computed here)."""

    def __init__(self, name: str, passages: list[Passage]) -> None:
        from rank_bm25 import BM25Okapi

        self.name = name
        self.passages = passages
        self.bm25 = BM25Okapi([tokens(p.text) for p in passages], k1=K1, b=B) if passages else None

    def search(self, query: str, k: int = 3) -> list[tuple[float, Passage]]:
        terms = tokens(query)
        if self.bm25 is None or not terms:
            return []
        scores = self.bm25.get_scores(terms)
        matched = [(float(score), passage, set(terms) & set(tokens(passage.text)))
                   for score, passage in zip(scores, self.passages, strict=True)]  # fmt: skip
        scored = [(score, passage) for score, passage, shared in matched if shared]  # a passage sharing no term
        return sorted(scored, key=lambda s: -s[0])[:k]


def index_dir(home: Path) -> Path:
    return home / "indexes"


def build(home: Path, name: str, paths: list[Path]) -> Index:
    if not _NAME.match(name):
        raise CLIError(f"index name {name!r}: letters, digits, '.', '_' and '-' only")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise CLIError(f"{path}: no such file or directory")
    passages = [p for f in files for p in split(f.resolve())]
    if not passages:
        raise CLIError("no text found to index (looked for .md, .txt and .rst files)")
    target = index_dir(home) / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": name, "kind": "bm25", "passages": [asdict(p) for p in passages]}))
    tmp.replace(target)
    return Index(name, passages)


def load(home: Path, name: str) -> Index:
    path = index_dir(home) / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in index_dir(home).glob("*.json"))) or "none"
        raise CLIError(f"no index named '{name}' (indexes: {known}); build one with `sage-ft index build`")
    raw = json.loads(path.read_text())
    return Index(name, [Passage(**p) for p in raw["passages"]])


def listing(home: Path) -> list[dict[str, object]]:
    rows = []
    for path in sorted(index_dir(home).glob("*.json")):
        raw = json.loads(path.read_text())
        sources = {p["source"] for p in raw["passages"]}
        rows.append({"name": raw["name"], "kind": raw["kind"], "passages": len(raw["passages"]),
                     "files": len(sources), "path": str(path)})  # fmt: skip
    return rows
