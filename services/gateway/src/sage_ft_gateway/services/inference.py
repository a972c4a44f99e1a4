"""Chat, completions, embeddings and deployments: the model name resolved (an alias to the model it stands for,
a model the caller cannot see to a 404), then the request forwarded to the serving service for the caller's tenant."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from sage_ft.protocol.serving import ChatRequest, CompletionRequest, DeployRequest, EmbeddingRequest
from sage_ft_gateway.services.models import ModelService
from sage_ft_gateway.state import GatewayState

ModelRequest = ChatRequest | CompletionRequest | EmbeddingRequest | DeployRequest


class InferenceService:
    def __init__(self, state: GatewayState, models: ModelService) -> None:
        self.serving = state.serving
        self.models = models

    async def forward_for_model(self, request: Request, path: str, tenant: str, body: ModelRequest) -> Response:
        """``body`` (chat, completion, embedding or deploy request) to serving's ``path``, its ``model`` resolved;
        answers name the model as the caller did."""
        asked = body.model
        model = await run_in_threadpool(self.models.servable_name, tenant, asked)
        payload: dict[str, Any] = {**body.model_dump(exclude_unset=True), "model": model}
        return await self.serving.forward(request, path, tenant, payload, asked=asked)

    async def deployments(self, request: Request, tenant: str, model: str | None = None) -> Response:
        """List deployments, or get or delete one (the request's method says which)."""
        path = "/v1/deployments" + (f"/{quote(model, safe='/:')}" if model is not None else "")
        return await self.serving.forward(request, path, tenant)
