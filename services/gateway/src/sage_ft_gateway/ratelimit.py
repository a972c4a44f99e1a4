"""Per-key rate limits on read routes, so clients polling without limit cannot starve a small machine's trainer.

``SAGE_GATEWAY_READ_RATE_LIMIT`` (e.g. ``30/second``; empty: off, the embedded default) caps GET requests per
API key (its sha256; the client address when no key is sent). Over the limit is a 429 in OpenAI's shape with
``Retry-After``, which the ``openai`` client honours. Health, readiness and metrics are never limited, and an event
stream counts once, at its opening: following a job's stream is the way to watch it.

The window (the ``limits`` library's moving window) is kept in the job store's Redis, under ``<prefix>:ratelimit``,
so the limit is the configured one across every gateway replica, not the rate times the replicas. If Redis does not
answer, reads are let through (the routes that need Redis answer 503 on their own): a limiter never turns an outage
into refusals of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any

from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

EXEMPT = ("/healthz", "/readyz", "/metrics")
log = logging.getLogger(__name__)


def shared_storage(redis_url: str, prefix: str) -> RedisStorage:
    """The limiter's storage in the job store's Redis, beside the installation's other keys (``prefix``)."""
    scheme, rest = redis_url.split("://", 1)
    return RedisStorage(
        f"async+{scheme}://{rest}",
        implementation="redispy",
        key_prefix=f"{prefix}:ratelimit",
        socket_timeout=2,
        socket_connect_timeout=2,
    )


class ReadRateLimit:
    def __init__(self, app: Any, limit: str, storage: RedisStorage) -> None:
        self.app = app
        self.item = parse(limit)
        self.limiter = MovingWindowRateLimiter(storage)
        self._warned = 0.0

    @staticmethod
    def _key(scope: Any) -> str:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return "key:" + hashlib.sha256(value).hexdigest()[:32]
        client = scope.get("client") or ("unknown", 0)
        return f"addr:{client[0]}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # the console's own files are not counted (its API calls are)
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope["path"] in EXEMPT
            or scope["path"].startswith("/console")
        ):
            await self.app(scope, receive, send)
            return
        key = self._key(scope)
        try:
            allowed = await self.limiter.hit(self.item, key)
            reset = (await self.limiter.get_window_stats(self.item, key)).reset_time if not allowed else 0.0
        except Exception as err:  # Redis away: let the read through, say so now and then
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("read rate limit not applied: its Redis storage failed (%s)", type(err).__name__)
            allowed = True
        if allowed:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(reset - time.time()))
        body = json.dumps(
            {
                "error": {
                    "message": f"Rate limit reached for reads ({self.item}); retry after {retry} s, "
                    "or follow the job's event stream instead of polling.",
                    "type": "rate_limit_error",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(retry).encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
