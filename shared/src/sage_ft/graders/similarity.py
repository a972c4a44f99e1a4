"""``text_similarity``'s metrics, from maintained packages, never from code of ours: ``rapidfuzz`` (fuzzy_match),
``sacrebleu`` (bleu) and Google's ``rouge-score`` (rouge_1 ... rouge_5, rouge_l). Metrics that need data this
installation cannot download (cosine embeddings, meteor's WordNet, gleu) are refused when the grader is checked."""

from __future__ import annotations

from sage_ft.errors import ConfigError
from sage_ft.graders.model import METRICS


def similarity(metric: str, text: str, reference: str) -> float:
    """A score in [0, 1]: fuzzy ratio, sentence BLEU, or a ROUGE F-measure."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return float(fuzz.ratio(text, reference)) / 100.0
    if metric == "bleu":
        from sacrebleu.metrics import BLEU

        return min(1.0, float(BLEU(effective_order=True).sentence_score(text, [reference]).score) / 100.0)
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer

        key = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
        return float(rouge_scorer.RougeScorer([key]).score(reference, text)[key].fmeasure)
    raise ConfigError(f"evaluation_metric: unsupported metric {metric!r}; supported: {', '.join(METRICS)}")
