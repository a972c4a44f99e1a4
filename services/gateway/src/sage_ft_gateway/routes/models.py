"""``/v1/models``: base models in use and fine-tuned models (by name or alias); delete and merge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sage_ft_gateway.deps import Svc, Tenant

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.list(tenant)


@router.post("/{model_id:path}/merge", status_code=202)
def merge_model(model_id: str, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.merge(tenant, model_id)


@router.get("/{model_id:path}")
def get_model(model_id: str, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.get(tenant, model_id)


@router.delete("/{model_id:path}")
def delete_model(model_id: str, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.models.delete(tenant, model_id)
