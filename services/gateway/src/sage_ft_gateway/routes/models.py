"""``/v1/models``: base models in use and fine-tuned models (by name or alias); delete and merge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sage_ft.api_errors import error_responses
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.models import MergeQueued, ModelList, ModelObject
from sage_ft_gateway.protocol.params import Deleted, ModelPath

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(400, 401, 404, 409, 503))


@router.get("", response_model=ModelList)
def list_models(tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.list(tenant)


@router.post("/{model_id:path}/merge", status_code=202, response_model=MergeQueued)
def merge_model(model_id: ModelPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.merge(tenant, model_id)


@router.get("/{model_id:path}", response_model=ModelObject)
def get_model(model_id: ModelPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.get(tenant, model_id)


@router.delete("/{model_id:path}", response_model=Deleted)
def delete_model(model_id: ModelPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.delete(tenant, model_id)
