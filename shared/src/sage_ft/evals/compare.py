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
    """One held-out record: the conversation up to its last assistant turn, and that turn as the reference. A
    preference pair's reference is its chosen answer, with ``rejected`` beside it; an RFT row has no reference, only
    the ``item`` its grader reads."""

    prompt: list[dict[str, Any]]
    reference: str
    line: int
    rejected: str | None = None
    item: dict[str, Any] | None = None


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


def cases_from_pairs(pairs: list[Any], limit: int | None = None) -> list[Case]:
    """Cases from ``sage_ft.data`` preference pairs: the chosen answer is the reference, the rejected one beside it."""
    out = [
        Case(
            prompt=[{"role": m["role"], "content": m["content"]} for m in p.prompt],
            reference=p.chosen,
            line=p.line,
            rejected=p.rejected,
        )
        for p in pairs
    ]
    return out[:limit] if limit is not None else out


def cases_from_prompts(prompts: list[Any], limit: int | None = None) -> list[Case]:
    """Cases from RFT rows (``sage_ft.data.reinforcement.Prompt``): no reference, the row's fields as the item."""
    out = [Case(prompt=list(p.messages), reference="", line=p.line, item=dict(p.item)) for p in prompts]
    return out[:limit] if limit is not None else out


def compare(
    cases: list[Case], answers: dict[str, list[str]], metrics: tuple[str, ...] = DEFAULT_SCORES
) -> dict[str, Any]:
    """The report: each model's mean per metric, the difference (first model minus second), and every item with both
    answers and their scores. ``answers`` maps a model's label to its answers, in ``cases`` order. For preference
    pairs, ``rejected`` is the share of each model's answers that are the rejected one."""
    labels = list(answers)
    items = [
        _item(
            i,
            case,
            answers,
            {m: {k: round(score(k, answers[m][i], case.reference), 4) for k in metrics} for m in labels},
        )
        for i, case in enumerate(cases)
    ]
    report = _report(items, labels, metrics)
    if items and all(c.rejected is not None for c in cases):  # preference pairs: how often each says the rejected
        for it, case in zip(items, cases, strict=True):
            it["rejected"] = case.rejected
            it["said_rejected"] = {m: score("exact", it["answers"][m], str(case.rejected)) for m in labels}
        report["rejected"] = {m: round(sum(it["said_rejected"][m] for it in items) / len(items), 4) for m in labels}
    return report


def compare_graded(
    cases: list[Case],
    answers: dict[str, list[str]],
    grader: Any,
    grading: Any,
    response_format: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The same report for RFT rows, scored by the job's grader (``sage_ft.graders``) instead of a reference: each
    model's mean ``reward``, and per item each answer's reward, whether it passed and the grader's error if any.
    ``response_format``: the job's, read as in training (``sample_of``)."""
    from sage_ft.graders import sample_of

    labels = list(answers)
    items = []
    for i, case in enumerate(cases):
        results = {m: grading.run(grader, sample_of(answers[m][i], response_format), case.item or {}) for m in labels}
        item = _item(i, case, answers, {m: {"reward": round(r.reward, 4)} for m, r in results.items()})
        item["item"] = case.item
        item["graded"] = {
            m: {"passed": r.passed, "error": "; ".join(r.errors.details) or None} for m, r in results.items()
        }
        items.append(item)
    return _report(items, labels, ("reward",))


def _item(i: int, case: Case, answers: dict[str, list[str]], scores: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "index": i,
        "line": case.line,
        "prompt": case.prompt,
        "reference": case.reference,
        "answers": {m: answers[m][i] for m in answers},
        "scores": scores,
    }


def _report(items: list[dict[str, Any]], labels: list[str], metrics: tuple[str, ...]) -> dict[str, Any]:
    n = len(items)
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
