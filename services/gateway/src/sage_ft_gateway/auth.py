"""API keys: stored as sha256 hashes, compared in constant time, each bound to a tenant.

With auth off (the embedded default) any key, or none, is accepted and everything belongs to one local tenant.
"""

from __future__ import annotations

import hashlib
import hmac

from sage_ft.storage.scoped import LOCAL_TENANT
from sage_ft_gateway.errors import ApiError


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    def __init__(self, enabled: bool, table: list[tuple[str, str]]) -> None:
        self.enabled = enabled
        self.table = table
        if enabled and not table:
            raise ValueError("auth is enabled but SAGE_GATEWAY_API_KEYS lists no keys")
        if any(tenant in ("", LOCAL_TENANT) for tenant, _ in table):
            raise ValueError(f"tenant names must be non-empty and not '{LOCAL_TENANT}'")

    def tenant(self, authorization: str | None) -> str:
        if not self.enabled:
            return LOCAL_TENANT
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        digest = hash_key(key.strip())
        found = None
        for tenant, expected in self.table:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(digest, expected):
                found = tenant
        if found is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return found
