"""The CLI's local index: passages with their source lines, ranked by BM25 (rank-bm25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_ft_cli import retrieval
from sage_ft_cli.client import CLIError


def test_search_ranks_the_passage_about_the_question_first_and_says_where_it_is(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cooking.md").write_text(
        "# Pasta\nBoil pasta for ten minutes in salted water.\n\n# Rice\nRice takes twenty minutes; rinse it first.\n"
    )
    (docs / "lora.txt").write_text(
        "LoRA freezes the base model and trains small low-rank matrices.\n\nQLoRA loads the frozen base in 4-bit.\n"
    )
    (docs / "image.png").write_bytes(b"\x89PNG")  # not text: skipped
    built = retrieval.build(tmp_path, "kb", [docs])
    assert len(built.passages) == 4
    index = retrieval.load(tmp_path, "kb")
    (score, best), *_ = index.search("how long do I boil pasta?")
    assert best.where.endswith("cooking.md:1-3") and score > 0
    assert index.search("what does LoRA freeze")[0][1].text.startswith("LoRA freezes")
    assert index.search("quantum chromodynamics") == []  # nothing shares a term
    assert [r["passages"] for r in retrieval.listing(tmp_path)] == [4]


def test_bad_names_and_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="index name"):
        retrieval.build(tmp_path, "../x", [tmp_path])
    with pytest.raises(CLIError, match="no such file"):
        retrieval.build(tmp_path, "kb", [tmp_path / "missing"])
    with pytest.raises(CLIError, match="no index named 'nope'"):
        retrieval.load(tmp_path, "nope")


def test_an_embedding_index_ranks_by_cosine_and_keeps_its_model(tmp_path: Path) -> None:
    """The index logic with a stand-in embedder (the real one, served by vLLM, is in test_serving_shapes.py):
    vectors are stored with the model that made them, queries are embedded with the same model."""
    docs = tmp_path / "kb.md"
    docs.write_text("alpha alpha\n\nbeta beta beta\n\ngamma\n")
    calls: list[tuple[str, list[str]]] = []

    def embedder(model: str) -> retrieval.Embed:
        def embed(texts: list[str]) -> list[list[float]]:
            calls.append((model, texts))
            return [[t.count("alpha"), t.count("beta"), t.count("gamma") + 0.1] for t in texts]

        return embed

    built = retrieval.build(tmp_path, "vec", [docs], model="toy", embed=embedder("toy"))
    assert isinstance(built, retrieval.EmbeddingIndex) and len(built.passages) == 3
    index = retrieval.load(tmp_path, "vec", embedder)
    (score, best), *_ = index.search("beta?", k=1)
    assert best.text == "beta beta beta" and score > 0.9
    assert calls[-1] == ("toy", ["beta?"])  # the query went to the index's own model
    assert retrieval.listing(tmp_path)[0]["model"] == "toy"
    with pytest.raises(CLIError, match="needs embeddings from toy"):
        retrieval.load(tmp_path, "vec").search("beta")
