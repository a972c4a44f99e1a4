"""Did the fine-tune help? Held-out records answered by two models, scored against the reference answer.

The same scoring serves the automatic evaluation at the end of a job, ``sage_ft.evaluate`` and ``sage-ft eval``:

- ``exact``: the answer equals the reference (surrounding whitespace ignored);
- ``f1``: token F1, the unigram-overlap F-measure (ROUGE-1 F from Google's ``rouge-score``);
- ``rouge_l``: ROUGE-L F-measure; ``bleu``: sentence BLEU from ``sacrebleu`` (scaled to [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sage_ft.errors import ConfigError
from sage_ft.graders.similarity import similarity

SCORES = ("exact", "f1", "rouge_l", "bleu")
DEFAULT_SCORES = ("exact", "f1", "rouge_l")


@dataclass(frozen=True)
class Case:
    """One held-out record: the conversation up to its last assistant turn, and that turn as the reference."""

    prompt: list[dict[str, Any]]
    reference: str
    line: int


def check_scores(names: list[str] | tuple[str, ...], param: str = "metrics") -> tuple[str, ...]:
    unknown = [n for n in names if n not in SCORES]
    if unknown or not names:
        raise ConfigError(
            f"{param}: unknown metric(s) {', '.join(unknown) or '(none given)'}; supported: {', '.join(SCORES)}",
            param=param,
        )
    return tuple(names)


def score(metric: str, answer: str, reference: str) -> float:
    if metric == "exact":
        return 1.0 if " ".join(answer.split()) == " ".join(reference.split()) else 0.0
    if metric == "f1":
        return similarity("rouge_1", answer, reference)
    return similarity(metric, answer, reference)


def cases_from(conversations: list[Any], limit: int | None = None) -> list[Case]:
    """Cases from ``sage_ft.data`` conversations (any supported format); ones without an assistant turn are skipped."""
    out = []
    for conv in conversations:
        turns = conv.messages
        last = max((i for i, m in enumerate(turns) if m.get("role") == "assistant"), default=None)
        if last is None or not isinstance(turns[last].get("content"), str):
            continue
        prompt = [{"role": m["role"], "content": m["content"]} for m in turns[:last]]
        out.append(Case(prompt=prompt, reference=turns[last]["content"], line=conv.line))
        if limit is not None and len(out) >= limit:
            break
    return out


def compare(
    cases: list[Case], answers: dict[str, list[str]], metrics: tuple[str, ...] = DEFAULT_SCORES
) -> dict[str, Any]:
    """The report: each model's mean per metric, the difference (first model minus second), and every item with both
    answers and their scores. ``answers`` maps a model's label to its answers, in ``cases`` order."""
    labels = list(answers)
    items: list[dict[str, Any]] = []
    for i, case in enumerate(cases):
        scores = {m: {k: round(score(k, answers[m][i], case.reference), 4) for k in metrics} for m in labels}
        items.append(
            {
                "index": i,
                "line": case.line,
                "prompt": case.prompt,
                "reference": case.reference,
                "answers": {m: answers[m][i] for m in labels},
                "scores": scores,
            }
        )
    n = len(cases)
    means = {
        m: {k: round(sum(it["scores"][m][k] for it in items) / n, 4) if n else 0.0 for k in metrics} for m in labels
    }
    report: dict[str, Any] = {"n": n, "metrics": list(metrics), "models": means, "items": items}
    if len(labels) == 2:
        first, second = labels
        report["delta"] = {k: round(means[first][k] - means[second][k], 4) for k in metrics}
    return report


def disagreements(report: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Items where the two models' ``metric`` differs: what a reader wants to see side by side."""
    labels = list(report["models"])
    if len(labels) != 2:
        return []
    a, b = labels
    return [it for it in report["items"] if it["scores"][a][metric] != it["scores"][b][metric]]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its items (what a job and a manifest keep)."""
    return {k: v for k, v in report.items() if k != "items"}
