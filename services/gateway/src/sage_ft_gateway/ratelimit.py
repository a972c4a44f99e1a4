"""Per-key rate limits on read routes, so clients polling without limit cannot starve a small machine's trainer.

``SAGE_GATEWAY_READ_RATE_LIMIT`` (e.g. ``30/second``; empty: off, the embedded default) caps GET requests per
API key (its sha256; the client address when no key is sent). Over the limit is a 429 in OpenAI's shape with
``Retry-After``, which the ``openai`` client honours. Health, readiness and metrics are never limited, and an event
stream counts once, at its opening: following a job's stream is the way to watch it. The window is kept per gateway
replica (the ``limits`` library's moving window, in memory).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

EXEMPT = ("/healthz", "/readyz", "/metrics")


class ReadRateLimit:
    def __init__(self, app: Any, limit: str) -> None:
        self.app = app
        self.item = parse(limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    @staticmethod
    def _key(scope: Any) -> str:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return "key:" + hashlib.sha256(value).hexdigest()[:32]
        client = scope.get("client") or ("unknown", 0)
        return f"addr:{client[0]}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # the console's own files are not counted (its API calls are)
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or scope["path"] in EXEMPT
                or scope["path"].startswith("/console")):  # fmt: skip
            await self.app(scope, receive, send)
            return
        key = self._key(scope)
        if self.limiter.hit(self.item, key):
            await self.app(scope, receive, send)
            return
        reset = self.limiter.get_window_stats(self.item, key).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        body = json.dumps({"error": {
            "message": f"Rate limit reached for reads ({self.item}); retry after {retry} s, or follow the job's "
                       "event stream instead of polling.",
            "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}).encode()  # fmt: skip
        headers = [(b"content-type", b"application/json"), (b"retry-after", str(retry).encode()),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
