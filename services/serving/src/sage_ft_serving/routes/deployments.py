"""``/v1/deployments``: make a published model servable, look at it, take it down."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from sage_ft.api_errors import ApiError, error_responses
from sage_ft.protocol.common import MODEL_ID
from sage_ft.protocol.serving import DeploymentDeleted, DeploymentList, DeploymentObject, DeployRequest
from sage_ft_serving.deps import Manager, State, Tenant

router = APIRouter(tags=["deployments"], responses=error_responses(400, 404, 409, 422, 502, 503))
ModelPath = Annotated[str, Path(pattern=MODEL_ID)]


@router.post("/v1/deployments", response_model=DeploymentObject)
async def deploy(req: DeployRequest, tenant: Tenant, manager: Manager, state: State) -> DeploymentObject:
    dep = await manager.deploy(tenant, req.model, req.engine)
    if req.wait:
        await manager.wait(dep, state.settings.serving.start_timeout_seconds)
        if dep.state == "failed":  # a script that checks the status code must not read this as a success
            raise dep.failure()
    return manager.describe(dep)


@router.get("/v1/deployments", response_model=DeploymentList)
async def list_deployments(tenant: Tenant, manager: Manager) -> DeploymentList:
    return DeploymentList(object="list", data=manager.listing(tenant))


@router.get("/v1/deployments/{model:path}", response_model=DeploymentObject)
async def get_deployment(model: ModelPath, tenant: Tenant, manager: Manager) -> DeploymentObject:
    dep = manager.find(tenant, model)
    if dep is None:
        raise ApiError(404, f"No deployment of '{model}'.", param="model", code="deployment_not_found")
    return manager.describe(dep)


@router.delete("/v1/deployments/{model:path}", response_model=DeploymentDeleted)
async def delete_deployment(model: ModelPath, tenant: Tenant, manager: Manager) -> DeploymentDeleted:
    dep = await manager.undeploy(tenant, model)
    return DeploymentDeleted(object="deployment.deleted", id=dep.model, deleted=True)
