"""OpenAI requests forwarded to the model server serving the named model, streams passed through as they come.

The request's ``model`` is rewritten to the engine's own id (an adapter name in vLLM, the pinned path in
transformers serve), and every response, streamed chunks included, names the model the client asked for.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse
from httpx_sse import EventSource

from sage_ft.api_errors import ApiError, error_body
from sage_ft_serving.manager import DeploymentManager
from sage_ft_serving.records import Deployment


async def forward(
    manager: DeploymentManager, body: dict[str, Any], route: str, tenant: str, wait: bool, asked: str | None = None
) -> Response:
    """``body`` (validated by the route's model) to the model server serving ``body["model"]``; answers name
    ``asked`` when given (the alias the caller used), else ``body["model"]``."""
    dep, server = await manager.for_request(tenant, body["model"], wait)
    requested = asked or body["model"]
    body["model"] = dep.engine_model
    url = server.handle.url + route
    started = time.monotonic()
    if body.get("stream"):
        return await _stream(manager, dep, url, body, requested, route, started)
    try:
        resp = await manager.client.post(url, json=body)
    except httpx.HTTPError as err:
        manager.metrics.proxy_latency.labels(route=route, status="502").observe(time.monotonic() - started)
        raise ApiError(502, f"The model server for '{requested}' did not answer: {err}", code="engine_error") from err
    manager.touch(dep)
    payload = _json(resp)
    if resp.status_code == 200 and isinstance(payload, dict):
        payload["model"] = requested
        _count_usage(manager, dep, payload.get("usage"))
    elif not (isinstance(payload, dict) and "error" in payload):
        payload = error_body(resp.status_code, f"model server: {str(payload)[:500]}", code="engine_error")
    manager.metrics.proxy_latency.labels(route=route, status=str(resp.status_code)).observe(time.monotonic() - started)
    return JSONResponse(payload, status_code=resp.status_code)


async def _stream(manager: DeploymentManager, dep: Deployment, url: str, body: dict[str, Any], requested: str,
                  route: str, started: float) -> Response:  # fmt: skip
    request = manager.client.build_request("POST", url, json=body)
    try:
        resp = await manager.client.send(request, stream=True)
    except httpx.HTTPError as err:
        raise ApiError(502, f"The model server for '{requested}' did not answer: {err}", code="engine_error") from err
    if resp.status_code != 200:
        raw = await resp.aread()
        await resp.aclose()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not (isinstance(payload, dict) and "error" in payload):
            payload = error_body(resp.status_code, f"model server: {raw[:500].decode(errors='replace')}",
                                 code="engine_error")  # fmt: skip
        return JSONResponse(payload, status_code=resp.status_code)

    async def chunks() -> AsyncIterator[bytes]:
        pieces, usage = 0, None
        try:
            async for sse in EventSource(resp).aiter_sse():
                if sse.data == "[DONE]":
                    yield b"data: [DONE]\n\n"
                    continue
                try:
                    chunk = json.loads(sse.data)
                except ValueError:
                    chunk = None
                if isinstance(chunk, dict):
                    chunk["model"] = requested  # the name the client asked for, not the engine's
                    usage = chunk.get("usage") or usage
                    pieces += sum(1 for c in chunk.get("choices") or [] if _has_text(c))
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                else:
                    yield f"data: {sse.data}\n\n".encode()
                manager.touch(dep)
        finally:
            await resp.aclose()
            _count_usage(manager, dep, usage or {"completion_tokens": pieces})
            manager.metrics.proxy_latency.labels(route=route, status="200").observe(time.monotonic() - started)

    return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def forward_embeddings(manager: DeploymentManager, body: dict[str, Any]) -> Response:
    """``/v1/embeddings`` to the pooling server of the named embedding model (started on first use)."""
    requested = body["model"]
    server = await manager.embedding_server(requested)
    server.last_used = time.monotonic()
    started = time.monotonic()
    try:
        resp = await manager.client.post(server.handle.url + "/v1/embeddings", json=body)
    except httpx.HTTPError as err:
        raise ApiError(
            502, f"The embedding server for '{requested}' did not answer: {err}", code="engine_error"
        ) from err
    server.last_used = time.monotonic()
    payload = _json(resp)
    if resp.status_code == 200 and isinstance(payload, dict):
        payload["model"] = requested
    elif not (isinstance(payload, dict) and "error" in payload):
        payload = error_body(resp.status_code, f"model server: {str(payload)[:500]}", code="engine_error")
    route = "/v1/embeddings"
    manager.metrics.proxy_latency.labels(route=route, status=str(resp.status_code)).observe(time.monotonic() - started)
    return JSONResponse(payload, status_code=resp.status_code)


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _has_text(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or choice.get("text"))


def _count_usage(manager: DeploymentManager, dep: Deployment, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    manager.metrics.tokens.labels(engine=dep.engine).inc(int(usage.get("completion_tokens") or 0))
    manager.metrics.prompt_tokens.labels(engine=dep.engine).inc(int(usage.get("prompt_tokens") or 0))
