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
from sage_ft_serving.metrics import ServingMetrics
from sage_ft_serving.records import Endpoint


class ModelProxy:
    """Forwards requests to an ``Endpoint`` (the manager says which), over the pool's HTTP client."""

    def __init__(self, client: httpx.AsyncClient, metrics: ServingMetrics) -> None:
        self.client = client
        self.metrics = metrics

    async def forward(self, endpoint: Endpoint, body: dict[str, Any], route: str, asked: str | None = None) -> Response:
        """``body`` (validated by the route's model) to ``endpoint``; answers name ``asked`` when given (the alias the
        caller used), else ``body["model"]``."""
        requested = asked or body["model"]
        body["model"] = endpoint.model
        url = endpoint.url + route
        started = time.monotonic()
        if body.get("stream"):
            return await self._stream(endpoint, url, body, requested, route, started)
        try:
            resp = await self.client.post(url, json=body)
        except httpx.HTTPError as err:
            self._observe(route, "502", started)
            raise ApiError(
                502, f"The model server for '{requested}' did not answer: {err}", code="engine_error"
            ) from err
        endpoint.touch()
        payload = _json(resp)
        if resp.status_code == 200 and isinstance(payload, dict):
            payload["model"] = requested
            self._count_usage(endpoint, payload.get("usage"))
        elif not (isinstance(payload, dict) and "error" in payload):
            payload = error_body(resp.status_code, f"model server: {str(payload)[:500]}", code="engine_error")
        self._observe(route, str(resp.status_code), started)
        return JSONResponse(payload, status_code=resp.status_code)

    async def _stream(
        self, endpoint: Endpoint, url: str, body: dict[str, Any], requested: str, route: str, started: float
    ) -> Response:
        request = self.client.build_request("POST", url, json=body)
        try:
            resp = await self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise ApiError(
                502, f"The model server for '{requested}' did not answer: {err}", code="engine_error"
            ) from err
        if resp.status_code != 200:
            raw = await resp.aread()
            await resp.aclose()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            if not (isinstance(payload, dict) and "error" in payload):
                message = f"model server: {raw[:500].decode(errors='replace')}"
                payload = error_body(resp.status_code, message, code="engine_error")
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
                    endpoint.touch()
            finally:
                await resp.aclose()
                self._count_usage(endpoint, usage or {"completion_tokens": pieces})
                self._observe(route, "200", started)

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def embeddings(self, endpoint: Endpoint, body: dict[str, Any]) -> Response:
        """``/v1/embeddings`` to the pooling server of the named embedding model."""
        requested, route = body["model"], "/v1/embeddings"
        started = time.monotonic()
        try:
            resp = await self.client.post(endpoint.url + route, json=body)
        except httpx.HTTPError as err:
            message = f"The embedding server for '{requested}' did not answer: {err}"
            raise ApiError(502, message, code="engine_error") from err
        endpoint.touch()
        payload = _json(resp)
        if resp.status_code == 200 and isinstance(payload, dict):
            payload["model"] = requested
        elif not (isinstance(payload, dict) and "error" in payload):
            payload = error_body(resp.status_code, f"model server: {str(payload)[:500]}", code="engine_error")
        self._observe(route, str(resp.status_code), started)
        return JSONResponse(payload, status_code=resp.status_code)

    def _observe(self, route: str, status: str, started: float) -> None:
        self.metrics.proxy_latency.labels(route=route, status=status).observe(time.monotonic() - started)

    def _count_usage(self, endpoint: Endpoint, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.metrics.tokens.labels(engine=endpoint.engine).inc(int(usage.get("completion_tokens") or 0))
        self.metrics.prompt_tokens.labels(engine=endpoint.engine).inc(int(usage.get("prompt_tokens") or 0))


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _has_text(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or choice.get("text"))
