"""Chat, completions and deployments: authenticated here, served by the serving service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sage_ft_gateway.deps import Svc, Tenant

router = APIRouter(tags=["serving"])


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, "/v1/chat/completions", tenant)


@router.post("/v1/completions")
async def completions(request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, "/v1/completions", tenant)


@router.api_route("/v1/deployments", methods=["GET", "POST"])
async def deployments(request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, "/v1/deployments", tenant)


@router.api_route("/v1/deployments/{model:path}", methods=["GET", "DELETE"])
async def deployment(model: str, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, f"/v1/deployments/{model}", tenant)
