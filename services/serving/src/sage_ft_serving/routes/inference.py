"""The OpenAI inference routes, forwarded to the model server of the named model (deployed on demand)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sage_ft_serving import proxy
from sage_ft_serving.deps import Manager, Tenant, Wait

router = APIRouter(tags=["inference"])


@router.post("/v1/chat/completions")
async def chat(request: Request, tenant: Tenant, manager: Manager, wait: Wait) -> Response:
    return await proxy.forward(manager, request, "/v1/chat/completions", tenant, wait=wait)


@router.post("/v1/completions")
async def completions(request: Request, tenant: Tenant, manager: Manager, wait: Wait) -> Response:
    return await proxy.forward(manager, request, "/v1/completions", tenant, wait=wait)


@router.get("/v1/models")
async def models(tenant: Tenant, manager: Manager) -> dict[str, Any]:
    ready = [d for d in manager.listing(tenant) if d["state"] == "ready"]
    return {"object": "list", "data": [{"id": d["id"], "object": "model", "owned_by": "sage-ft",
                                        "created": d["created_at"]} for d in ready]}  # fmt: skip
