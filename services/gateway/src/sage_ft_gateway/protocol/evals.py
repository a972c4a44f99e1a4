"""``/v1/evals``: OpenAI's eval objects (a custom data source and deterministic graders)."""

from __future__ import annotations

from typing import Any, Literal

from sage_ft_gateway.protocol.params import ApiModel


class EvalObject(ApiModel):
    object: Literal["eval"]
    id: str
    name: str
    created_at: int
    metadata: dict[str, str]
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]


class EvalList(ApiModel):
    object: Literal["list"]
    data: list[EvalObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class EvalDeleted(ApiModel):
    object: Literal["eval.deleted"]
    deleted: bool
    eval_id: str


class ResultCounts(ApiModel):
    total: int
    errored: int
    failed: int
    passed: int


class EvalRunObject(ApiModel):
    object: Literal["eval.run"]
    id: str
    eval_id: str
    name: str
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "canceled"]
    created_at: int
    data_source: dict[str, Any]
    metadata: dict[str, str]
    error: dict[str, str] | None
    report_url: str
    result_counts: ResultCounts
    per_testing_criteria_results: list[dict[str, Any]]
    per_model_usage: list[dict[str, Any]]


class EvalRunList(ApiModel):
    object: Literal["list"]
    data: list[EvalRunObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class EvalRunDeleted(ApiModel):
    object: Literal["eval.run.deleted"]
    deleted: bool
    run_id: str


class OutputItemObject(ApiModel):
    object: Literal["eval.run.output_item"]
    id: str
    eval_id: str
    run_id: str
    created_at: int
    status: Literal["pass", "fail", "error"]
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[dict[str, Any]]
    sample: dict[str, Any]


class OutputItemList(ApiModel):
    object: Literal["list"]
    data: list[OutputItemObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class EvalRunEvent(ApiModel):
    object: Literal["eval.run.event"]
    id: str
    created_at: float
    level: str
    message: str
    type: str
    data: dict[str, Any]


class EvalRunEvents(ApiModel):
    object: Literal["list"]
    data: list[EvalRunEvent]
    has_more: bool
