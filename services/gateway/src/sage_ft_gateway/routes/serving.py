"""Chat, completions and deployments: validated and authenticated here, served by the serving service."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
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
from sage_ft_gateway.protocol.common import SSE_EVENT, ModelPath

router = APIRouter(tags=["serving"], responses=error_responses(400, 401, 404, 409, 422, 502, 503))
_STREAMED = "A completion; with stream=true, server-sent chunks ending with [DONE]"
_STREAM: dict[int | str, dict[str, Any]] = {200: {"description": _STREAMED, "content": {
    "application/json": {"schema": Completion.model_json_schema()},
    "text/event-stream": {"schema": SSE_EVENT}}}}  # fmt: skip


def _resolved(body: ChatRequest | CompletionRequest | EmbeddingRequest | DeployRequest, model: str) -> dict[str, Any]:
    return {**body.model_dump(exclude_unset=True), "model": model}


@router.post("/v1/chat/completions", response_model=Completion, responses=_STREAM)
async def chat_completions(body: ChatRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    model = await run_in_threadpool(svc.models.servable_name, tenant, body.model)
    return await svc.state.serving.forward(
        request, "/v1/chat/completions", tenant, _resolved(body, model), asked=body.model
    )


@router.post("/v1/completions", response_model=Completion, responses=_STREAM)
async def completions(body: CompletionRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    model = await run_in_threadpool(svc.models.servable_name, tenant, body.model)
    return await svc.state.serving.forward(request, "/v1/completions", tenant, _resolved(body, model), asked=body.model)


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    model = await run_in_threadpool(svc.models.servable_name, tenant, body.model)
    return await svc.state.serving.forward(request, "/v1/embeddings", tenant, _resolved(body, model), asked=body.model)


@router.post("/v1/deployments", response_model=DeploymentObject)
async def deploy(body: DeployRequest, request: Request, tenant: Tenant, svc: Svc) -> Response:
    model = await run_in_threadpool(svc.models.servable_name, tenant, body.model)
    return await svc.state.serving.forward(request, "/v1/deployments", tenant, _resolved(body, model), asked=body.model)


@router.get("/v1/deployments", response_model=DeploymentList)
async def list_deployments(request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, "/v1/deployments", tenant)


@router.get("/v1/deployments/{model:path}", response_model=DeploymentObject)
async def get_deployment(model: ModelPath, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, f"/v1/deployments/{quote(model, safe='/:')}", tenant)


@router.delete("/v1/deployments/{model:path}", response_model=DeploymentDeleted)
async def delete_deployment(model: ModelPath, request: Request, tenant: Tenant, svc: Svc) -> Response:
    return await svc.state.serving.forward(request, f"/v1/deployments/{quote(model, safe='/:')}", tenant)
