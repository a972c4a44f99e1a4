"""Chat, completions and deployments: validated and authenticated here, served by the serving service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sage_ft.api_errors import error_responses
from sage_ft.protocol.serving import (
    ChatRequest,
    Completion,
    CompletionRequest,
    DeploymentDeleted,
    DeploymentList,
    DeploymentObject,
    DeployRequest,
    EmbeddingList,
    EmbeddingRequest,
)
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.params import SSE_EVENT, ModelPath

router = APIRouter(tags=["serving"], responses=error_responses(400, 401, 404, 409, 422, 502, 503))
_STREAMED = "A completion; with stream=true, server-sent chunks ending with [DONE]"
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": _STREAMED,
        "content": {
            "application/json": {"schema": Completion.model_json_schema()},
            "text/event-stream": {"schema": SSE_EVENT},
        },
    }
}


@router.post("/v1/chat/completions", response_model=Completion, responses=_STREAM)
async def chat_completions(body: ChatRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.forward_for_model(request, "/v1/chat/completions", tenant, body)


@router.post("/v1/completions", response_model=Completion, responses=_STREAM)
async def completions(body: CompletionRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.forward_for_model(request, "/v1/completions", tenant, body)


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.forward_for_model(request, "/v1/embeddings", tenant, body)


@router.post("/v1/deployments", response_model=DeploymentObject)
async def deploy(body: DeployRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.forward_for_model(request, "/v1/deployments", tenant, body)


@router.get("/v1/deployments", response_model=DeploymentList)
async def list_deployments(request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.deployments(request, tenant)


@router.get("/v1/deployments/{model:path}", response_model=DeploymentObject)
async def get_deployment(model: ModelPath, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.deployments(request, tenant, model)


@router.delete("/v1/deployments/{model:path}", response_model=DeploymentDeleted)
async def delete_deployment(model: ModelPath, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.inference.deployments(request, tenant, model)
