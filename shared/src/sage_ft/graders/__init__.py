"""Graders: OpenAI's six types, checked once (``parse_grader``) and run by one implementation (``Grading``), for
Evals' testing criteria, ``/v1/fine_tuning/alpha/graders/run`` and reinforcement fine-tuning's rewards."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from sage_ft.errors import ConfigError, request_error
from sage_ft.graders.grading import GraderErrors, GraderResult, Grading, ModelCaller, ModelCallError, sample_of
from sage_ft.graders.model import (
    METRICS,
    AnyGrader,
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from sage_ft.graders.sandbox import PythonSandbox, Sandbox
from sage_ft.graders.templates import check_template, render, variables
from sage_ft.protocol.common import GRADER_TYPES, TAGGED_UNIONS
from sage_ft.settings import GraderSettings

__all__ = [
    "GRADER_TYPES",
    "METRICS",
    "AnyGrader",
    "Grader",
    "GraderErrors",
    "GraderResult",
    "Grading",
    "LabelModelGrader",
    "ModelCallError",
    "ModelCaller",
    "MultiGrader",
    "PythonGrader",
    "PythonSandbox",
    "Sandbox",
    "ScoreModelGrader",
    "StringCheckGrader",
    "TextSimilarityGrader",
    "check_template",
    "check_templates",
    "model_names",
    "parse_grader",
    "python_sandbox",
    "render",
    "sample_of",
    "template_fields",
    "variables",
]

_GRADER: TypeAdapter[AnyGrader] = TypeAdapter(Grader)


def parse_grader(raw: Any, param: str, item_properties: set[str] | None = None) -> AnyGrader:
    """Validate one grader; every error is a ConfigError naming ``<param>.<field>`` as the request spells it.
    ``item_properties``: the item fields templates may use (None: any)."""
    try:
        grader = _GRADER.validate_python(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where, message = request_error({**first, "loc": ("grader", *first["loc"])}, TAGGED_UNIONS)
        where = param + where.removeprefix("grader")
        if where.endswith("evaluation_metric"):
            message = f"unsupported metric; supported: {', '.join(METRICS)}"
        raise ConfigError(f"{where}: {message}", param=where) from None
    check_templates(grader, param, item_properties)
    return grader


def _templates(grader: AnyGrader, param: str) -> list[tuple[str, str]]:
    """Every template of a grader, with the parameter it sits at."""
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        return [(grader.input, f"{param}.input"), (grader.reference, f"{param}.reference")]
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        return [(m.text(), f"{param}.input.{i}.content") for i, m in enumerate(grader.input)]
    if isinstance(grader, MultiGrader):
        return [t for name, sub in grader.graders.items() for t in _templates(sub, f"{param}.graders.{name}")]
    return []  # python: its source reads item and sample itself


def check_templates(grader: AnyGrader, param: str, item_properties: set[str] | None) -> None:
    for template, where in _templates(grader, param):
        check_template(template, where, item_properties, sample=True)


def template_fields(grader: AnyGrader) -> set[str]:
    """The top-level item fields the grader's templates read (``{{item.answer}}`` -> ``answer``)."""
    out = set()
    for template, _ in _templates(grader, ""):
        for var in variables(template):
            space, _, rest = var.partition(".")
            if space == "item" and rest:
                out.add(rest.split(".", 1)[0])
    return out


def model_names(grader: AnyGrader) -> list[str]:
    """The served models a grader asks (score_model, label_model, and those inside a multi)."""
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        return [grader.model]
    if isinstance(grader, MultiGrader):
        return [m for sub in grader.graders.values() for m in model_names(sub)]
    return []


def python_sandbox(settings: GraderSettings, serving_url: str | None = None) -> Sandbox:
    """The sandbox ``settings.python_sandbox`` names: ``local`` (in this process's host or container) or ``serving``
    (over HTTP: ``python_sandbox_url``, else serving's own URL)."""
    if settings.python_sandbox == "serving":
        url = settings.python_sandbox_url or serving_url
        if not url:
            raise ValueError("SAGE_GRADER_PYTHON_SANDBOX=serving needs serving's URL or SAGE_GRADER_PYTHON_SANDBOX_URL")
        from sage_ft.graders.serving import ServingSandbox

        return ServingSandbox(url, settings)
    return PythonSandbox(settings)
