"""Run a grader on one sample: the one implementation behind Evals, ``/graders/run`` and reinforcement fine-tuning.

A grader never raises for what the sample or the user's code did: the result carries OpenAI's error flags
(``python_grader_runtime_error``, ``model_grader_parse_error``, ...) and a reward of 0, so a run or a training
step goes on. Model graders ask a served model through ``ModelCaller`` (serving's chat API, in production).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from sage_ft.graders.formula import FormulaError, evaluate
from sage_ft.graders.model import (
    AnyGrader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    SamplingParams,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from sage_ft.graders.sandbox import PythonSandbox, Sandbox
from sage_ft.graders.similarity import similarity
from sage_ft.graders.templates import render
from sage_ft.response_format import schema_of


@dataclass
class GraderErrors:
    """OpenAI's ``metadata.errors``: every flag is present, true where that went wrong."""

    formula_parse_error: bool = False
    invalid_variable_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_server_error: bool = False
    model_grader_server_error_details: str | None = None
    other_error: bool = False
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False
    details: list[str] = field(default_factory=list)  # ours: a sentence per error, for events and output items

    def add(self, flag: str, detail: str, **values: Any) -> None:
        setattr(self, flag, True)
        for k, v in values.items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if detail not in self.details:
            self.details.append(detail)

    def merge(self, other: GraderErrors, prefix: str) -> None:
        for f in fields(self):
            value = getattr(other, f.name)
            if f.name == "details":
                self.details.extend(f"{prefix}: {d}" for d in value)
            elif value and not getattr(self, f.name):
                setattr(self, f.name, value)

    @property
    def any(self) -> bool:
        return bool(self.details)

    def to_api(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}


@dataclass
class GraderResult:
    name: str
    type: str
    reward: float
    passed: bool
    errors: GraderErrors
    execution_time: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    token_usage: dict[str, int] = field(default_factory=dict)  # per model asked
    sampled_model_name: str | None = None


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    tokens: int | None = None


class ModelCallError(Exception):
    """The model could not answer (serving's error, a timeout); ``not_found``: no such model is served."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class ModelCaller(Protocol):
    def chat(self, model: str, messages: list[dict[str, str]], params: SamplingParams | None) -> ChatAnswer: ...


def sample_of(model_sample: str, response_format: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's ``sample`` namespace from the model's text: ``output_json`` when the text is JSON. Under a
    ``response_format`` of ``json_object`` or ``json_schema`` (an RFT job's), only an object that matches it counts:
    an answer that does not has no ``output_json``, so a grader that reads it scores 0 and the format is learned."""
    try:
        parsed = json.loads(model_sample)
    except ValueError:
        parsed = None
    kind = (response_format or {}).get("type")
    if parsed is not None and kind in ("json_object", "json_schema") and not _conforms(parsed, response_format):
        parsed = None
    return {"output_text": model_sample, "output_json": parsed, "output_tools": [], "choices": []}


def _conforms(parsed: Any, response_format: dict[str, Any] | None) -> bool:
    import jsonschema

    if not isinstance(parsed, dict):  # OpenAI's structured outputs are objects at the top
        return False
    schema = schema_of(response_format) or {"type": "object"}
    return jsonschema.validators.validator_for(schema)(schema).is_valid(parsed)


class Grading:
    """Grades samples. ``models`` answers model graders; ``sandbox`` runs python graders."""

    def __init__(self, models: ModelCaller | None = None, sandbox: Sandbox | None = None) -> None:
        self.models = models
        self.sandbox: Sandbox = sandbox or PythonSandbox()

    def run(self, grader: AnyGrader, sample: dict[str, Any], item: Any) -> GraderResult:
        started = time.monotonic()
        errors = GraderErrors()
        result = GraderResult(grader.name, grader.type, 0.0, False, errors, 0.0)
        item_ns = item if isinstance(item, dict) else {}
        try:
            if isinstance(grader, MultiGrader):
                self._multi(grader, sample, item, result)
            else:
                score = self._score(grader, sample, item_ns, item, result)
                if score is not None:
                    result.reward = score
                    result.passed = passes(grader, score)
        except KeyError as err:  # a template names a field this item (or sample) lacks
            name = str(err.args[0])
            if name.startswith("sample.output_json") and sample.get("output_json") is None:
                why = "the sample is not JSON (or not JSON that matches the response format)"
                errors.add("invalid_variable_error", f"{why}, so it has no {name!r}")
            else:
                errors.add("invalid_variable_error", f"the {name.split('.')[0]} has no field {name!r}")
        result.execution_time = time.monotonic() - started
        if errors.any:
            result.reward, result.passed = 0.0, False
        return result

    def _multi(self, grader: MultiGrader, sample: dict[str, Any], item: Any, result: GraderResult) -> None:
        scores: dict[str, float] = {}
        for name, sub in grader.graders.items():
            inner = self.run(sub, sample, item)
            scores[name] = inner.reward
            result.errors.merge(inner.errors, name)
            for model, n in inner.token_usage.items():
                result.token_usage[model] = result.token_usage.get(model, 0) + n
            result.sampled_model_name = result.sampled_model_name or inner.sampled_model_name
        result.sub_rewards = scores
        if result.errors.any:
            return
        try:
            result.reward = evaluate(grader.calculate_output, scores)
        except FormulaError as err:
            result.errors.add("formula_parse_error", f"calculate_output {err}")
            return
        result.passed = passes(grader, result.reward)

    def _score(
        self, grader: AnyGrader, sample: dict[str, Any], item_ns: dict[str, Any], item: Any, result: GraderResult
    ) -> float | None:
        if isinstance(grader, StringCheckGrader):
            given, reference = render(grader.input, item_ns, sample), render(grader.reference, item_ns, sample)
            return 1.0 if string_check(grader.operation, given, reference) else 0.0
        if isinstance(grader, TextSimilarityGrader):
            given, reference = render(grader.input, item_ns, sample), render(grader.reference, item_ns, sample)
            return similarity(grader.evaluation_metric, given, reference)
        if isinstance(grader, PythonGrader):
            return self._python(grader, sample, item, result.errors)
        assert isinstance(grader, ScoreModelGrader | LabelModelGrader)
        return self._model(grader, sample, item_ns, result)

    def _python(self, grader: PythonGrader, sample: dict[str, Any], item: Any, errors: GraderErrors) -> float | None:
        if not self.sandbox.image_allowed(grader.image_tag):
            errors.add(
                "python_grader_server_error",
                f"image_tag {grader.image_tag!r} is not an allowed sandbox image",
                python_grader_server_error_type="image_not_allowed",
            )
            return None
        outcome = self.sandbox.run(grader.source, sample, item, grader.image_tag)
        if outcome.error is None:
            return outcome.score
        detail = outcome.details or outcome.error
        if outcome.error == "runtime":
            errors.add("python_grader_runtime_error", detail, python_grader_runtime_error_details=detail)
        elif outcome.error == "timeout":
            errors.add("unresponsive_reward_error", detail)
            errors.add("python_grader_server_error", detail, python_grader_server_error_type="timeout")
        elif outcome.error == "output_limit":
            errors.add("truncated_observation_error", detail)
            errors.add("python_grader_server_error", detail, python_grader_server_error_type="output_limit")
        else:
            errors.add("python_grader_server_error", detail, python_grader_server_error_type=outcome.error)
        return None

    def _model(
        self,
        grader: ScoreModelGrader | LabelModelGrader,
        sample: dict[str, Any],
        item_ns: dict[str, Any],
        result: GraderResult,
    ) -> float | None:
        messages = [{"role": m.role, "content": render(m.text(), item_ns, sample)} for m in grader.input]
        params = grader.sampling_params if isinstance(grader, ScoreModelGrader) else None
        if self.models is None:
            result.errors.add(
                "model_grader_server_error",
                "model graders cannot run here (no serving)",
                model_grader_server_error_details="no serving",
            )
            return None
        try:
            answer = self.models.chat(grader.model, messages, params)
        except ModelCallError as err:
            result.errors.add("model_grader_server_error", str(err), model_grader_server_error_details=str(err))
            return None
        result.sampled_model_name = grader.model
        if answer.tokens is not None:
            result.token_usage[grader.model] = answer.tokens
        if isinstance(grader, LabelModelGrader):
            label = parse_label(answer.text, grader.labels)
            if label is None:
                result.errors.add("model_grader_parse_error", f"the answer names none of the labels: {answer.text!r}")
                return None
            return 1.0 if label in grader.passing_labels else 0.0
        score = parse_score(answer.text)
        if score is None:
            result.errors.add("model_grader_parse_error", f"the answer holds no score: {answer.text[:200]!r}")
            return None
        low, high = grader.bounds
        return min(high, max(low, score))


def string_check(operation: str, given: str, reference: str) -> bool:
    return {
        "eq": given == reference,
        "ne": given != reference,
        "like": reference in given,
        "ilike": reference.lower() in given.lower(),
    }[operation]


def passes(grader: AnyGrader, score: float) -> bool:
    """A testing criterion's verdict: its ``pass_threshold`` where it has one (the midpoint of a score model's
    range, 0.5 otherwise, when unset); a label grader passes on a passing label, a string check on a match."""
    if isinstance(grader, StringCheckGrader | LabelModelGrader):
        return score >= 1.0
    threshold = grader.pass_threshold
    if threshold is None:
        threshold = sum(grader.bounds) / 2 if isinstance(grader, ScoreModelGrader) else 0.5
    return score >= threshold


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_score(text: str) -> float | None:
    """A number from a model's answer: ``{"result": x}`` (OpenAI's structured form) or the first number in it."""
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("result"), int | float):
            return float(parsed["result"])
    except ValueError:
        pass
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label a model answered: ``{"result": label}``, the whole answer, or the one label the answer names."""
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and parsed.get("result") in labels:
            return str(parsed["result"])
    except ValueError:
        pass
    answer = text.strip().strip(".").strip().lower()
    exact = [label for label in labels if label.lower() == answer]
    if exact:
        return exact[0]
    named = [label for label in labels if re.search(rf"\b{re.escape(label.lower())}\b", answer)]
    return named[0] if len(named) == 1 else None
