"""OpenAI's deterministic graders: ``string_check`` and ``text_similarity``, as testing criteria of an eval.

The metrics come from maintained packages, never from code of ours: ``rapidfuzz`` (fuzzy_match), ``sacrebleu``
(bleu) and Google's ``rouge-score`` (rouge_1 ... rouge_5, rouge_l). Graders that need a model (label_model,
score_model) or run user code (python) are refused with a 400 naming the type, as are metrics that need data this
installation cannot download (cosine embeddings, meteor's WordNet, gleu).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sage_ft.errors import ConfigError
from sage_ft.evals.templates import check_template, render

GRADER_TYPES = ("string_check", "text_similarity")
METRICS = ("fuzzy_match", "bleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")


class _Grader(BaseModel):
    """What every grader has: a unique name and two templates, the text graded and the reference."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=256)
    input: str
    reference: str


class StringCheck(_Grader):
    type: Literal["string_check"]
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarity(_Grader):
    type: Literal["text_similarity"]
    evaluation_metric: Literal[METRICS]  # type: ignore[valid-type]
    pass_threshold: float = Field(default=0.5, ge=0, le=1)


Criterion = Annotated[StringCheck | TextSimilarity, Field(discriminator="type")]
_CRITERIA: TypeAdapter[list[Criterion]] = TypeAdapter(list[Criterion])


@dataclass(frozen=True)
class Grade:
    name: str
    score: float
    passed: bool


def parse_criteria(raw: Any, item_properties: set[str] | None) -> list[StringCheck | TextSimilarity]:
    """Validate ``testing_criteria``; every error is a ConfigError naming ``testing_criteria.<i>.<field>``."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("testing_criteria: give at least one grader", param="testing_criteria")
    for i, entry in enumerate(raw):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in GRADER_TYPES:
            raise ConfigError(
                f"testing_criteria.{i}.type: unsupported grader type {kind!r}; supported: {', '.join(GRADER_TYPES)}",
                param=f"testing_criteria.{i}.type",
            )
    try:
        criteria = _CRITERIA.validate_python(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"] if p not in GRADER_TYPES]
        param = ".".join(["testing_criteria", *loc])
        msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        if loc and loc[-1] == "evaluation_metric":
            msg = f"unsupported metric; supported: {', '.join(METRICS)}"
        raise ConfigError(f"{param}: {msg}", param=param) from None
    names = [c.name for c in criteria]
    if len(set(names)) != len(names):
        raise ConfigError("testing_criteria: grader names must be unique", param="testing_criteria")
    for i, c in enumerate(criteria):
        for field in ("input", "reference"):
            check_template(getattr(c, field), f"testing_criteria.{i}.{field}", item_properties, sample=True)
    return criteria


def grade(criterion: StringCheck | TextSimilarity, item: dict[str, Any], output_text: str) -> Grade:
    sample = {"output_text": output_text}
    given, reference = render(criterion.input, item, sample), render(criterion.reference, item, sample)
    if isinstance(criterion, StringCheck):
        ok = {
            "eq": given == reference,
            "ne": given != reference,
            "like": reference in given,
            "ilike": reference.lower() in given.lower(),
        }[criterion.operation]
        return Grade(criterion.name, 1.0 if ok else 0.0, ok)
    score = similarity(criterion.evaluation_metric, given, reference)
    return Grade(criterion.name, score, score >= criterion.pass_threshold)


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
