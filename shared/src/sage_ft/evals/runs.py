"""Eval runs: the request (OpenAI's ``completions`` data source), the prompt each item becomes, how one answered
item is graded into an output item, and the run's counts.

Generation is not here: a worker asks a served model for each prompt and hands the text to ``grade_item``. Keeping
grading and counting pure makes them the same in the worker, the CLI and ``sage_ft.evaluate``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sage_ft.errors import ConfigError, request_error
from sage_ft.evals.graders import parse_criteria
from sage_ft.evals.items import rows_from_content
from sage_ft.graders import AnyGrader, Grading, sample_of
from sage_ft.graders.templates import check_template, render
from sage_ft.jobs.model import now

RUN_STATUSES = ("queued", "in_progress", "completed", "failed", "canceled")


class TemplateMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    type: Literal["message"] | None = None


class InputTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["template"]
    template: list[TemplateMessage] = Field(min_length=1, max_length=64)


class FileIdSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["file_id"]
    id: str = Field(pattern=r"^file-[0-9a-f]{1,64}$")


class FileContentSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["file_content"]
    content: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_completion_tokens: int = Field(default=256, ge=1, le=32_768)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class CompletionsSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["completions"]
    model: str = Field(min_length=1, max_length=256)
    input_messages: InputTemplate
    source: FileIdSource | FileContentSource = Field(discriminator="type")
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)


class RunRequest(BaseModel):
    """``POST /v1/evals/{eval_id}/runs``."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256)
    data_source: CompletionsSource
    metadata: dict[str, str] | None = None


def parse_run(body: Any, item_schema: dict[str, Any]) -> RunRequest:
    """Validate a run request against its eval; errors name the parameter (``data_source.input_messages...``)."""
    try:
        request = RunRequest.model_validate(body)
    except ValidationError as err:
        param, msg = request_error(err.errors()[0], {})
        param = param or "body"
        if param in ("data_source.type", "data_source.source.type", "data_source.input_messages.type"):
            msg = f"{msg} (supported: completions from a template, over file_id or file_content rows)"
        raise ConfigError(f"{param}: {msg}", param=param) from None
    props = item_schema.get("properties")
    known = set(props) if isinstance(props, dict) else None
    for i, message in enumerate(request.data_source.input_messages.template):
        check_template(message.content, f"data_source.input_messages.template.{i}.content", known, sample=False)
    if isinstance(request.data_source.source, FileContentSource):
        rows_from_content(request.data_source.source.content, item_schema, "data_source.source.content")
    return request


def prompt(request: RunRequest, item: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages one item becomes."""
    return [{"role": m.role, "content": render(m.content, item)} for m in request.data_source.input_messages.template]


class CriterionResult(BaseModel):
    """One testing criterion's verdict on one item (``error``: why the grader gave no score)."""

    name: str
    type: str
    score: float
    passed: bool
    error: str | None = None


class GradedItem(BaseModel):
    """One graded item as the run store keeps it; the gateway shows it as OpenAI's ``eval.run.output_item``. An
    item whose answer could not be generated, or that a grader could not grade, is an error, not a failure."""

    index: int
    item: dict[str, Any]
    status: Literal["pass", "fail", "error"]
    results: list[CriterionResult] = Field(default_factory=list)
    input: list[dict[str, Any]] = Field(default_factory=list)
    output_text: str | None = None
    model: str
    error: str | None = None  # generation's
    created_at: float = Field(default_factory=now)
    sampling: dict[str, Any] = Field(default_factory=dict)  # finish_reason, usage and the sampling parameters

    @model_validator(mode="before")
    @classmethod
    def _stored_as_wire_form(cls, raw: Any) -> Any:
        """Items stored before this record existed kept OpenAI's shape; they read the same."""
        if not isinstance(raw, dict) or "datasource_item_id" not in raw:
            return raw
        sample = dict(raw.get("sample") or {})
        output = sample.pop("output", None) or [{}]
        error = sample.pop("error", None)
        return {
            "index": raw["datasource_item_id"],
            "item": raw.get("datasource_item") or {},
            "status": raw["status"],
            "results": raw.get("results") or [],
            "input": sample.pop("input", []),
            "output_text": output[0].get("content"),
            "model": sample.pop("model", ""),
            "error": error.get("message") if isinstance(error, dict) else None,
            "created_at": raw.get("created_at", 0),
            "sampling": sample,
        }


def grade_item(
    grading: Grading,
    criteria: list[AnyGrader],
    index: int,
    item: dict[str, Any],
    messages: list[dict[str, str]],
    output_text: str | None,
    model: str,
    error: str | None = None,
) -> GradedItem:
    """Grade one answered item with every criterion (none when its generation failed)."""
    results = []
    if error is None and output_text is not None:
        sample = sample_of(output_text)
        for c in criteria:
            g = grading.run(c, sample, item)
            why = "; ".join(g.errors.details) or None
            results.append(CriterionResult(name=c.name, type=c.type, score=g.reward, passed=g.passed, error=why))
    return graded_item(index, item, results, messages, output_text, model, error)


def graded_item(
    index: int,
    item: dict[str, Any],
    results: list[CriterionResult],
    messages: list[dict[str, str]],
    output_text: str | None,
    model: str,
    error: str | None = None,
) -> GradedItem:
    """An item with its criteria's verdicts: ``error`` if it or any criterion errored, else pass only if all did."""
    if error is not None or any(r.error for r in results):
        status: Literal["pass", "fail", "error"] = "error"
    else:
        status = "pass" if all(r.passed for r in results) else "fail"
    return GradedItem(
        index=index,
        item=item,
        status=status,
        results=results,
        input=messages,
        output_text=output_text,
        model=model,
        error=error,
    )


def summarize(criteria: list[dict[str, Any]], items: list[GradedItem], total: int) -> dict[str, Any]:
    """``result_counts`` and ``per_testing_criteria_results`` over the items graded so far."""
    counts = {"total": total, "errored": 0, "failed": 0, "passed": 0}
    per = {c["name"]: {"testing_criteria": c["name"], "passed": 0, "failed": 0} for c in criteria}
    for item in items:
        counts[OUTCOME[item.status]] += 1
        for r in item.results:
            per[r.name]["passed" if r.passed else "failed"] += 1
    return {"result_counts": counts, "per_testing_criteria_results": list(per.values())}


OUTCOME = {"error": "errored", "fail": "failed", "pass": "passed"}  # an item's status -> its run count


def criteria_of(raw: list[dict[str, Any]]) -> list[AnyGrader]:
    """A stored eval's graders (already validated when the eval was created)."""
    return parse_criteria(raw, None)
