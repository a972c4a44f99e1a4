"""``/v1/evals/{eval_id}/runs``: OpenAI's eval runs and their output items; runs execute on a worker."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from sage_ft.api_errors import error_responses
from sage_ft.evals.runs import RunRequest
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.evals import (
    EvalRunDeleted,
    EvalRunEvents,
    EvalRunList,
    EvalRunObject,
    OutputItemList,
    OutputItemObject,
)
from sage_ft_gateway.protocol.params import IdPath

router = APIRouter(prefix="/v1/evals/{eval_id}/runs", tags=["evals"], responses=error_responses(400, 401, 404, 503))
RunCursor = Annotated[str | None, Query(pattern=r"^evalrun-[0-9a-f]{1,64}$", description="A run id: list after it.")]
ItemCursor = Annotated[
    str | None,
    Query(pattern=r"^outputitem-[0-9a-f]{1,64}-[0-9]{1,9}$", description="An output item id: list after it."),
]
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]
RunStatus = Literal["queued", "in_progress", "completed", "canceled", "failed"]


@router.post("", response_model=EvalRunObject, responses=error_responses(409))
def create_run(eval_id: IdPath, body: RunRequest, tenant: Tenant, svc: Svc) -> EvalRunObject:
    return svc.eval_runs.create(tenant, eval_id, body.model_dump(exclude_unset=True))


@router.get("", response_model=EvalRunList)
def list_runs(
    eval_id: IdPath,
    tenant: Tenant,
    svc: Svc,
    after: RunCursor = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: RunStatus | None = None,
) -> dict[str, Any]:
    return svc.eval_runs.list(tenant, eval_id, after, limit, order, status)


@router.get("/{run_id}", response_model=EvalRunObject)
def get_run(eval_id: IdPath, run_id: IdPath, tenant: Tenant, svc: Svc) -> EvalRunObject:
    return svc.eval_runs.get(tenant, eval_id, run_id)


@router.post("/{run_id}/cancel", response_model=EvalRunObject, responses=error_responses(409))
@router.post("/{run_id}", response_model=EvalRunObject, responses=error_responses(409))  # what older SDKs call
def cancel_run(eval_id: IdPath, run_id: IdPath, tenant: Tenant, svc: Svc) -> EvalRunObject:
    return svc.eval_runs.cancel(tenant, eval_id, run_id)


@router.delete("/{run_id}", response_model=EvalRunDeleted)
def delete_run(eval_id: IdPath, run_id: IdPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.eval_runs.delete(tenant, eval_id, run_id)


@router.get("/{run_id}/output_items", response_model=OutputItemList)
def list_output_items(
    eval_id: IdPath,
    run_id: IdPath,
    tenant: Tenant,
    svc: Svc,
    after: ItemCursor = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: Literal["pass", "fail", "error"] | None = None,
) -> dict[str, Any]:
    return svc.eval_runs.output_items(tenant, eval_id, run_id, after, limit, order, status)


@router.get("/{run_id}/output_items/{output_item_id}", response_model=OutputItemObject)
def get_output_item(
    eval_id: IdPath, run_id: IdPath, output_item_id: IdPath, tenant: Tenant, svc: Svc
) -> OutputItemObject:
    return svc.eval_runs.output_item(tenant, eval_id, run_id, output_item_id)


@router.get("/{run_id}/events", response_model=EvalRunEvents)
def run_events(eval_id: IdPath, run_id: IdPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    """sage-ft's extension: what happened to the run (queued, started, resumed, re-queued, finished)."""
    return svc.eval_runs.events(tenant, eval_id, run_id)
