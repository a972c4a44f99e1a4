"""One webhook attempt: signed as Standard Webhooks (what ``openai``'s ``client.webhooks.unwrap`` verifies), sent only
to a receiver whose address is allowed, checked on the address its name resolves to at send time and connected to
as checked (a DNS answer that changes in between cannot send it elsewhere), with no redirect followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass

import httpx

from sage_ft.jobs.secrets import SecretBox
from sage_ft.webhooks.store import Endpoint
from sage_ft_gateway.settings import WebhookSettings

USER_AGENT = "sage-ft-webhooks/0.1"


def sign(secrets: list[str], webhook_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` for each secret (two
    during a rotation's overlap, so either verifies)."""
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    out = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        out.append("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode())
    return " ".join(out)


def signing_secrets(box: SecretBox, endpoint: Endpoint) -> list[str]:
    """The endpoint's current secret, and its previous one while a rotation's overlap lasts."""
    sealed = {"current": endpoint.secret}
    if endpoint.old_secret and (endpoint.old_secret_until or 0) > time.time():
        sealed["old"] = endpoint.old_secret
    opened = box.open(sealed)
    return [opened["current"], *([opened["old"]] if "old" in opened else [])]


def headers_for(secrets: list[str], webhook_id: str, body: str) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_refused(url: str, settings: WebhookSettings) -> str | None:
    """Why an endpoint URL is refused as written (scheme, host, a literal address), or None."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        return f"not a URL: {err}"
    if parsed.scheme not in ("https", "http") or not parsed.host:
        return "must be an https URL with a host"
    if parsed.scheme == "http" and not settings.allow_http:
        return "must be https (plain http is allowed only where the operator sets SAGE_WEBHOOK_ALLOW_HTTP)"
    if parsed.userinfo:
        return "must not carry credentials"
    try:
        literal = ipaddress.ip_address(parsed.host)
    except ValueError:
        literal = None
    if literal is not None and not settings.allow_private_addresses and not _public(parsed.host):
        return f"{parsed.host} is not a public address ({_ALLOW})"
    return None


_ALLOW = "loopback, private, link-local and metadata addresses are refused unless SAGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    latency_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookClient:
    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            timeout=settings.timeout_seconds, follow_redirects=False, trust_env=False, http2=False
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, url: str, body: str, headers: dict[str, str]) -> Outcome:
        started = time.monotonic()

        def done(status: int | None, error: str | None) -> Outcome:
            return Outcome(status, error, int((time.monotonic() - started) * 1000))

        why = url_refused(url, self.settings)
        if why:
            return done(None, f"refused: {why}")
        parsed = httpx.URL(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            return done(None, f"{host} does not resolve: {err}")
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.settings.allow_private_addresses:
            refused = [a for a in addresses if not _public(a)]
            if refused:
                return done(None, f"refused: {host} resolves to {refused[0]} ({_ALLOW})")
        target = parsed.copy_with(host=addresses[0])  # connect to the address just checked
        sent = {**headers, "host": host if parsed.port is None else f"{host}:{parsed.port}"}
        extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
        try:
            answer = await self.http.post(str(target), content=body.encode(), headers=sent, extensions=extensions)
        except httpx.TimeoutException:
            return done(None, f"no answer within {self.settings.timeout_seconds:g} s")
        except httpx.HTTPError as err:
            return done(None, f"{type(err).__name__}: {err}")
        if 300 <= answer.status_code < 400:
            where = answer.headers.get("location", "?")
            return done(answer.status_code, f"redirect to {where} not followed")
        if not 200 <= answer.status_code < 300:
            return done(answer.status_code, f"the receiver answered {answer.status_code}")
        return done(answer.status_code, None)
