"""``/v1/evals``: OpenAI's eval objects (a custom data source and deterministic graders)."""

from __future__ import annotations

from typing import Any, Literal

from sage_ft.evals.model import SAMPLE_SCHEMA, EvalRecord
from sage_ft.evals.runs import GradedItem
from sage_ft.evals.runstore import EvalRun, RunStatus
from sage_ft_gateway.protocol.params import ApiModel


class EvalObject(ApiModel):
    object: Literal["eval"]
    id: str
    name: str
    created_at: int
    metadata: dict[str, str]
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]

    @classmethod
    def from_record(cls, record: EvalRecord) -> EvalObject:
        """The eval as OpenAI shows one: its item schema (with the sample a run adds) as a custom data source."""
        properties: dict[str, Any] = {"item": record.item_schema}
        if record.include_sample_schema:
            properties["sample"] = SAMPLE_SCHEMA
        schema = {"type": "object", "properties": properties, "required": sorted(properties)}
        return cls(
            object="eval",
            id=record.id,
            name=record.name,
            created_at=int(record.created_at),
            metadata=record.metadata or {},
            data_source_config={"type": "custom", "schema": schema},
            testing_criteria=record.testing_criteria,
        )


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
    status: RunStatus
    created_at: int
    data_source: dict[str, Any]
    metadata: dict[str, str]
    error: dict[str, str] | None
    report_url: str
    result_counts: ResultCounts
    per_testing_criteria_results: list[dict[str, Any]]
    per_model_usage: list[dict[str, Any]]

    @classmethod
    def from_run(cls, run: EvalRun, counts: dict[str, int]) -> EvalRunObject:
        """The run as OpenAI shows one; ``counts`` are the store's counters for it (``RunStore.counts``)."""
        result_counts, per_criteria = run.tally(counts)
        return cls(
            object="eval.run",
            id=run.id,
            eval_id=run.eval_id,
            name=run.name,
            model=run.model,
            status=run.status,
            created_at=int(run.created_at),
            data_source=run.data_source,
            metadata=run.metadata or {},
            error=run.error,
            report_url=f"/v1/evals/{run.eval_id}/runs/{run.id}/output_items",
            result_counts=ResultCounts(**result_counts),
            per_testing_criteria_results=per_criteria,
            per_model_usage=[],
        )


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


def item_id(run_id: str, index: int) -> str:
    """``outputitem-<run hex>-<index>``: an output item's id names its run and the row it graded."""
    return f"outputitem-{run_id.removeprefix('evalrun-')}-{index}"


def item_index(run_id: str, output_item_id: str) -> int | None:
    """The index an output item id names, if it is one of ``run_id``'s."""
    head, _, tail = output_item_id.rpartition("-")
    return int(tail) if head == f"outputitem-{run_id.removeprefix('evalrun-')}" and tail.isdigit() else None


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

    @classmethod
    def from_record(cls, run: EvalRun, graded: GradedItem) -> OutputItemObject:
        error = {"code": "generation_failed", "message": graded.error} if graded.error else None
        return cls(
            object="eval.run.output_item",
            id=item_id(run.id, graded.index),
            eval_id=run.eval_id,
            run_id=run.id,
            created_at=int(graded.created_at),
            status=graded.status,
            datasource_item_id=graded.index,
            datasource_item=graded.item,
            results=[r.model_dump(exclude_none=True) for r in graded.results],
            sample={
                "input": graded.input,
                "output": [{"role": "assistant", "content": graded.output_text or ""}],
                "model": graded.model,
                "error": error,
                **graded.sampling,
            },
        )


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
