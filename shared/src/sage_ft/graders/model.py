"""OpenAI's graders, with its field names: the one definition Evals' ``testing_criteria``, ``/graders/run`` and
reinforcement fine-tuning's ``method.reinforcement.grader`` all validate against.

``Grader`` is a union discriminated on ``type``, so the OpenAPI schema says exactly what is accepted. ``multi``
holds the others (not itself) by name. ``pass_threshold`` is the Evals API's extension of a grader into a
testing criterion; ``/graders/run`` and RFT use the score alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sage_ft.protocol.common import MODEL_ID

METRICS = ("fuzzy_match", "bleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
MAX_SOURCE = 256 * 1024


class _Grader(BaseModel):
    # strict: a boolean or a string is not a number here, as the schema says (lax mode would take false as 0.0)
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)
    name: str = Field(min_length=1, max_length=256)


class StringCheckGrader(_Grader):
    """1 when ``input`` and ``reference`` (both templates) compare as ``operation`` says, else 0."""

    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Grader):
    """A similarity in [0, 1] between ``input`` and ``reference``, from a maintained metric package."""

    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal[METRICS]  # type: ignore[valid-type]
    pass_threshold: float = Field(default=0.5, ge=0, le=1)


class PythonGrader(_Grader):
    """``source`` defines ``grade(sample, item) -> float``; it runs in a sandbox (``sage_ft.graders.sandbox``)."""

    type: Literal["python"]
    source: str = Field(min_length=1, max_length=MAX_SOURCE)
    image_tag: str | None = Field(default=None, max_length=128)
    pass_threshold: float | None = None


class ContentPart(BaseModel):
    """Text in a grader message; images and audio are refused (no model here reads them)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["input_text", "output_text"]
    text: str


class GraderMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    type: Literal["message"] | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    max_completions_tokens: int | None = Field(default=None, ge=1, le=32768)
    reasoning_effort: str | None = None  # accepted for compatibility; no served model here reasons
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class _ModelGrader(_Grader):
    model: str = Field(pattern=MODEL_ID, description="A model this installation serves: a base or a fine-tune.")
    input: list[GraderMessage] = Field(min_length=1)


class ScoreModelGrader(_ModelGrader):
    """A served model reads the messages (templates filled) and answers a number in ``range``."""

    type: Literal["score_model"]
    range: list[float] | None = Field(default=None, min_length=2, max_length=2)
    sampling_params: SamplingParams | None = None
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _ordered_range(self) -> ScoreModelGrader:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError("range: give [low, high] with low < high")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.range[0], self.range[1]) if self.range else (0.0, 1.0)


class LabelModelGrader(_ModelGrader):
    """A served model picks one of ``labels``; the item passes when it is one of ``passing_labels``."""

    type: Literal["label_model"]
    labels: list[str] = Field(min_length=2)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _passing_are_labels(self) -> LabelModelGrader:
        unknown = [p for p in self.passing_labels if p not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels: {unknown} are not among labels {self.labels}")
        return self


SimpleGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


class MultiGrader(_Grader):
    """Runs ``graders`` (by name) and combines their scores with ``calculate_output``, e.g. ``0.5*a + 0.5*b``."""

    type: Literal["multi"]
    graders: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], SimpleGrader] = Field(
        min_length=1, max_length=16
    )
    calculate_output: str = Field(min_length=1, max_length=2000)
    pass_threshold: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_grader(cls, raw: Any) -> Any:
        """The SDK types ``graders`` as one grader; OpenAI's docs give a map of them. Both are read, one grader by
        its own name."""
        if isinstance(raw, dict) and isinstance(raw.get("graders"), dict) and "type" in raw["graders"]:
            inner = raw["graders"]
            return {**raw, "graders": {str(inner.get("name", "grader")): inner}}
        return raw

    @model_validator(mode="after")
    def _formula_reads_the_graders(self) -> MultiGrader:
        from sage_ft.graders.formula import FormulaError, parse

        try:
            parse(self.calculate_output, self.graders)
        except FormulaError as err:
            raise ValueError(f"calculate_output: {err}") from None
        return self


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader,
    Field(discriminator="type"),
]
AnyGrader = StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader
