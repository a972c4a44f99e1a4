"""The OpenAI inference routes, forwarded to the model server of the named model (deployed on demand)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from sage_ft.api_errors import error_responses
from sage_ft.protocol.common import SSE_EVENT
from sage_ft.protocol.serving import ChatRequest, Completion, CompletionRequest, EmbeddingList, EmbeddingRequest
from sage_ft_serving.deps import AskedAs, Manager, Proxy, Tenant, Wait

router = APIRouter(tags=["inference"], responses=error_responses(400, 404, 409, 422, 502, 503))
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A completion, or server-sent chunks",
        "content": {
            "application/json": {"schema": Completion.model_json_schema()},
            "text/event-stream": {"schema": SSE_EVENT},
        },
    }
}


@router.post("/v1/chat/completions", response_model=Completion, responses=_STREAM)
async def chat(
    body: ChatRequest, tenant: Tenant, manager: Manager, proxy: Proxy, wait: Wait, asked: AskedAs
) -> Response:
    endpoint = await manager.endpoint(tenant, body.model, wait)
    return await proxy.forward(endpoint, body.model_dump(exclude_unset=True), "/v1/chat/completions", asked)


@router.post("/v1/completions", response_model=Completion, responses=_STREAM)
async def completions(
    body: CompletionRequest, tenant: Tenant, manager: Manager, proxy: Proxy, wait: Wait, asked: AskedAs
) -> Response:
    endpoint = await manager.endpoint(tenant, body.model, wait)
    return await proxy.forward(endpoint, body.model_dump(exclude_unset=True), "/v1/completions", asked)


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, manager: Manager, proxy: Proxy) -> Response:
    """Embeddings from a base embedding model (shared by every tenant), for retrieval."""
    endpoint = await manager.embedding_endpoint(body.model)
    return await proxy.embeddings(endpoint, body.model_dump(exclude_unset=True))


@router.get("/v1/models")
async def models(tenant: Tenant, manager: Manager) -> dict[str, Any]:
    ready = [d for d in manager.listing(tenant) if d.state == "ready"]
    return {
        "object": "list",
        "data": [{"id": d.id, "object": "model", "owned_by": "sage-ft", "created": d.created_at} for d in ready],
    }
