"""``/v1/deployments``: make a published model servable, look at it, take it down."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from sage_ft.api_errors import ApiError
from sage_ft_serving.deps import Manager, State, Tenant

router = APIRouter(tags=["deployments"])


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str
    engine: str | None = None
    wait: bool = False


@router.post("/v1/deployments")
async def deploy(req: DeployRequest, tenant: Tenant, manager: Manager, state: State) -> dict[str, Any]:
    dep = await manager.deploy(tenant, req.model, req.engine)
    if req.wait:
        await manager.wait(dep, state.settings.serving.start_timeout_seconds)
    return manager.describe(dep)


@router.get("/v1/deployments")
async def list_deployments(tenant: Tenant, manager: Manager) -> dict[str, Any]:
    return {"object": "list", "data": manager.listing(tenant)}


@router.get("/v1/deployments/{model:path}")
async def get_deployment(model: str, tenant: Tenant, manager: Manager) -> dict[str, Any]:
    dep = manager.find(tenant, model)
    if dep is None:
        raise ApiError(404, f"No deployment of '{model}'.", param="model", code="deployment_not_found")
    return manager.describe(dep)


@router.delete("/v1/deployments/{model:path}")
async def delete_deployment(model: str, tenant: Tenant, manager: Manager) -> dict[str, Any]:
    dep = await manager.undeploy(tenant, model)
    return {"object": "deployment.deleted", "id": dep.model, "deleted": True}
