"""The OpenAI inference routes, forwarded to the model server of the named model (deployed on demand)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from sage_ft.api_errors import error_responses
from sage_ft.protocol.common import SSE_EVENT
from sage_ft.protocol.serving import ChatRequest, Completion, CompletionRequest, EmbeddingList, EmbeddingRequest
from sage_ft_serving import proxy
from sage_ft_serving.deps import AskedAs, Manager, Tenant, Wait

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
async def chat(body: ChatRequest, tenant: Tenant, manager: Manager, wait: Wait, asked: AskedAs) -> Response:
    payload = body.model_dump(exclude_unset=True)
    return await proxy.forward(manager, payload, "/v1/chat/completions", tenant, wait, asked)


@router.post("/v1/completions", response_model=Completion, responses=_STREAM)
async def completions(
    body: CompletionRequest, tenant: Tenant, manager: Manager, wait: Wait, asked: AskedAs
) -> Response:
    payload = body.model_dump(exclude_unset=True)
    return await proxy.forward(manager, payload, "/v1/completions", tenant, wait, asked)


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, manager: Manager) -> Response:
    """Embeddings from a base embedding model (shared by every tenant), for retrieval."""
    return await proxy.forward_embeddings(manager, body.model_dump(exclude_unset=True))


@router.get("/v1/models")
async def models(tenant: Tenant, manager: Manager) -> dict[str, Any]:
    ready = [d for d in manager.listing(tenant) if d["state"] == "ready"]
    return {"object": "list", "data": [{"id": d["id"], "object": "model", "owned_by": "sage-ft",
                                        "created": d["created_at"]} for d in ready]}  # fmt: skip
