"""The HTTP client of the serving service (another process): requests forwarded there with the caller's tenant.

The gateway authenticates; serving trusts the ``X-Sage-Tenant`` header it sets (serving listens on the internal
network only). Streams pass through chunk by chunk. If serving is down, callers get a 503 in OpenAI's shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from sage_ft_gateway.errors import ApiError

log = logging.getLogger(__name__)
_PASS_HEADERS = ("content-type", "retry-after", "cache-control")


class ServingClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(30.0, read=None))

    def _unavailable(self, err: Exception) -> ApiError:
        log.error("serving at %s unreachable: %s", self.base_url, err)
        return ApiError(
            503,
            "The serving service is unavailable; try again shortly.",
            code="serving_unavailable",
            headers={"Retry-After": "5"},
        )

    async def forward(
        self, request: Request, path: str, tenant: str, body: dict[str, Any] | None = None, asked: str | None = None
    ) -> Response:
        """``request`` to serving's ``path``, with ``body`` (the validated JSON) when it has one. ``asked``: the name
        the caller used, when the body names the model it resolved to (an alias): answers show that name."""
        headers = {"X-Sage-Tenant": tenant, "Content-Type": "application/json"}
        if asked is not None and body is not None and asked != body.get("model"):
            headers["X-Sage-Model-As"] = asked
        if request.headers.get("x-sage-no-wait"):
            headers["X-Sage-No-Wait"] = "1"
        content = json.dumps(body).encode() if body is not None else None
        upstream = self.client.build_request(
            request.method, path, content=content, headers=headers, params=request.query_params
        )
        try:
            resp = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as err:
            raise self._unavailable(err) from err
        out_headers = {k: v for k, v in resp.headers.items() if k.lower() in _PASS_HEADERS}
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            content = await resp.aread()
            await resp.aclose()
            return Response(content, status_code=resp.status_code, headers=out_headers)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await resp.aclose()

        return StreamingResponse(chunks(), status_code=resp.status_code, headers=out_headers)

    def undeploy(self, tenant: str, model: str) -> None:
        """Best effort, when a model is deleted: its adapter is unloaded and an unused server stopped."""
        try:
            httpx.delete(
                f"{self.base_url}/v1/deployments/{quote(model, safe=':')}",
                headers={"X-Sage-Tenant": tenant},
                timeout=30,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            log.warning("could not undeploy %s from serving: %s", model, err)

    async def aclose(self) -> None:
        await self.client.aclose()
