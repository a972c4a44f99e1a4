"""Local retrieval indexes over text and markdown files: BM25 (``rank-bm25``, offline) or embeddings.

``sage-ft index build NAME PATH...`` splits each file into passages of a few lines, remembers where each came from
(file and line range), and stores the index as JSON under ``~/.sage/indexes/NAME.json``. A BM25 index scores
passages by shared words. An embedding index (``--embedding-model all-MiniLM-L6-v2``) stores one vector per
passage, computed by serving's model servers through the gateway's ``/v1/embeddings``, and ranks by cosine
similarity, so a question that shares no word with its answer still finds it. The CLI never imports torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sage_ft_cli.client import CLIError

SUFFIXES = {".md", ".markdown", ".txt", ".rst"}
_WORD = re.compile(r"[a-z0-9]+")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
K1, B = 1.5, 0.75
BATCH = 64  # passages per embeddings request


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
        matched = [
            (float(score), passage, set(terms) & set(tokens(passage.text)))
            for score, passage in zip(scores, self.passages, strict=True)
        ]
        scored = [(score, passage) for score, passage, shared in matched if shared]  # a passage sharing no term
        return sorted(scored, key=lambda s: -s[0])[:k]


Embed = Callable[[list[str]], list[list[float]]]


class EmbeddingIndex:
    """Passages ranked by cosine similarity between their vectors and the query's (same model for both)."""

    def __init__(
        self, name: str, passages: list[Passage], vectors: list[list[float]], model: str, embed: Embed | None
    ) -> None:
        self.name, self.passages, self.model, self.embed = name, passages, model, embed
        self.vectors = _unit_rows(np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1))

    def search(self, query: str, k: int = 3) -> list[tuple[float, Passage]]:
        if self.embed is None:
            raise CLIError(f"index '{self.name}' needs embeddings from {self.model}; no gateway to compute them")
        query_vector = _unit_rows(np.asarray([self.embed([query])[0]], dtype=np.float32))[0]
        if query_vector.shape[0] != self.vectors.shape[1]:
            raise CLIError(f"index '{self.name}': the query's embedding does not match the index's ({self.model})")
        scores = self.vectors @ query_vector
        best = np.argsort(-scores, kind="stable")[:k]
        return [(float(scores[i]), self.passages[i]) for i in best]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), so a dot product is the cosine similarity."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


AnyIndex = Index | EmbeddingIndex


def index_dir(home: Path) -> Path:
    return home / "indexes"


def build(
    home: Path, name: str, paths: list[Path], *, model: str | None = None, embed: Embed | None = None
) -> AnyIndex:
    """Build and save an index: BM25, or embeddings from ``model`` (through ``embed``) when given."""
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
    data: dict[str, object] = {"name": name, "kind": "bm25", "passages": [asdict(p) for p in passages]}
    if model is not None and embed is not None:
        vectors = [v for i in range(0, len(passages), BATCH) for v in embed([p.text for p in passages[i : i + BATCH]])]
        data.update(kind="embedding", model=model, vectors=vectors)
    tmp.write_text(json.dumps(data))
    tmp.replace(target)
    if data["kind"] == "embedding":
        return EmbeddingIndex(name, passages, vectors, str(model), embed)
    return Index(name, passages)


def load(home: Path, name: str, embedder: Callable[[str], Embed] | None = None) -> AnyIndex:
    """A saved index; an embedding index gets ``embedder(model)`` to embed queries with its own model."""
    path = index_dir(home) / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in index_dir(home).glob("*.json"))) or "none"
        raise CLIError(f"no index named '{name}' (indexes: {known}); build one with `sage-ft index build`")
    raw = json.loads(path.read_text())
    passages = [Passage(**p) for p in raw["passages"]]
    if raw.get("kind") == "embedding":
        model = str(raw["model"])
        return EmbeddingIndex(name, passages, raw["vectors"], model, embedder(model) if embedder else None)
    return Index(name, passages)


def listing(home: Path) -> list[dict[str, object]]:
    rows = []
    for path in sorted(index_dir(home).glob("*.json")):
        raw = json.loads(path.read_text())
        sources = {p["source"] for p in raw["passages"]}
        rows.append(
            {
                "name": raw["name"],
                "kind": raw["kind"],
                "model": raw.get("model"),
                "passages": len(raw["passages"]),
                "files": len(sources),
                "path": str(path),
            }
        )
    return rows
