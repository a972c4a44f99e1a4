"""``/v1/evals``: OpenAI's Evals API, eval definitions (runs come with the ``evaluate`` task)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from sage_ft.api_errors import error_responses
from sage_ft.evals.model import EvalCreate, EvalUpdate
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.evals import EvalDeleted, EvalList, EvalObject
from sage_ft_gateway.protocol.params import IdPath

router = APIRouter(prefix="/v1/evals", tags=["evals"], responses=error_responses(400, 401, 404, 503))
EvalCursor = Annotated[str | None, Query(pattern=r"^eval-[0-9a-f]{1,64}$", description="An eval id: list after it.")]


@router.post("", response_model=EvalObject)
def create_eval(body: EvalCreate, tenant: Tenant, svc: Svc) -> EvalObject:
    return EvalObject.from_record(svc.evals.create(tenant, body))


@router.get("", response_model=EvalList)
def list_evals(
    tenant: Tenant,
    svc: Svc,
    after: EvalCursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:
    return svc.evals.list(tenant, after, limit, order)


@router.get("/{eval_id}", response_model=EvalObject)
def get_eval(eval_id: IdPath, tenant: Tenant, svc: Svc) -> EvalObject:
    return EvalObject.from_record(svc.evals.get(tenant, eval_id))


@router.post("/{eval_id}", response_model=EvalObject)
def update_eval(eval_id: IdPath, body: EvalUpdate, tenant: Tenant, svc: Svc) -> EvalObject:
    return EvalObject.from_record(svc.evals.update(tenant, eval_id, body))


@router.delete("/{eval_id}", response_model=EvalDeleted)
def delete_eval(eval_id: IdPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.evals.delete(tenant, eval_id)
