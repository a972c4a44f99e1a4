"""Webhook endpoints: OpenAI's API over ``sage_ft.webhooks.store``. A signing secret is made here, sealed with the
operator's key (``SAGE_SECRETS_KEY``, as users' W&B keys) and shown once; a URL is checked before it is stored (and
again, on its resolved address, at every send); endpoints belong to their tenant, and another tenant gets a 404."""

from __future__ import annotations

import secrets
from typing import Any

from sage_ft.jobs.model import now
from sage_ft.webhooks import EVENT_TYPES, event_body
from sage_ft.webhooks.store import Attempt, Delivery, Endpoint, new_secret
from sage_ft_gateway.errors import ApiError, not_found
from sage_ft_gateway.protocol.params import cursor_page
from sage_ft_gateway.protocol.webhooks import (
    DeliveryObject,
    WebhookCreate,
    WebhookEndpointObject,
    WebhookEndpointWithSecret,
    WebhookRotate,
    WebhookTestResult,
    WebhookUpdate,
)
from sage_ft_gateway.state import GatewayState
from sage_ft_gateway.webhook_client import WebhookClient, headers_for, signing_secrets, url_refused

TEST_OBJECT = {"fine_tuning.job": "ftjob-test", "eval.run": "evalrun-test"}


class WebhookService:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.store = state.webhooks

    def event_types(self) -> dict[str, Any]:
        return {"object": "list", "data": list(EVENT_TYPES)}

    def _check(self, url: str | None, event_types: list[str] | None) -> None:
        if url is not None:
            why = url_refused(url, self.state.settings.webhooks)
            if why:
                raise ApiError(400, f"url: {why}.", param="url", code="invalid_url")
        for i, kind in enumerate(event_types or []):
            if kind not in EVENT_TYPES:
                supported = ", ".join(EVENT_TYPES)
                raise ApiError(
                    400,
                    f"event_types[{i}]: {kind!r} is not an event sage-ft sends; it sends {supported}.",
                    param=f"event_types.{i}",
                    code="invalid_event_type",
                )

    def _sealed(self) -> tuple[str, str, str]:
        """A new secret: as shown once, sealed for Redis, and its hint."""
        secret = new_secret()
        sealed = self.state.secrets.seal({"s": secret}, "signing_secret")["s"]
        return secret, sealed, f"{secret[:6]}...{secret[-4:]}"

    def get(self, tenant: str, endpoint_id: str) -> Endpoint:
        endpoint = self.store.get_for(tenant, endpoint_id)
        if endpoint is None:
            raise not_found("webhook endpoint", endpoint_id, "webhook_endpoint_id")
        return endpoint

    def create(self, tenant: str, body: WebhookCreate) -> WebhookEndpointWithSecret:
        self._check(body.url, body.event_types)
        secret, sealed, hint = self._sealed()
        endpoint = Endpoint(
            id=f"we_{secrets.token_hex(12)}",
            tenant=tenant,
            name=body.name,
            url=body.url,
            event_types=list(dict.fromkeys(body.event_types)),
            created_at=int(now()),
            secret=sealed,
            hint=hint,
        )
        self.store.put(endpoint)
        shown = WebhookEndpointObject.from_record(endpoint).model_dump()
        return WebhookEndpointWithSecret(**shown, signing_secret=secret)

    def list(self, tenant: str, after: str | None, limit: int) -> dict[str, Any]:
        endpoints = self.store.list_for(tenant)[::-1]  # newest first, as OpenAI's lists
        ids = [e.id for e in endpoints]
        if after is not None:
            if after not in ids:
                raise ApiError(404, f"'{after}' is not a webhook endpoint id.", param="after", code="not_found")
            endpoints = endpoints[ids.index(after) + 1 :]
        page = [WebhookEndpointObject.from_record(e) for e in endpoints[:limit]]
        return cursor_page(page, len(endpoints) > limit)

    def update(self, tenant: str, endpoint_id: str, body: WebhookUpdate) -> Endpoint:
        self.get(tenant, endpoint_id)
        self._check(body.url, body.event_types)

        def change(e: Endpoint) -> None:
            e.name = body.name if body.name is not None else e.name
            e.url = body.url if body.url is not None else e.url
            if body.event_types is not None:
                e.event_types = list(dict.fromkeys(body.event_types))
            if body.enabled is True:
                e.enabled, e.disabled_reason, e.consecutive_failures = True, None, 0
            elif body.enabled is False:
                e.enabled, e.disabled_reason = False, "disabled by a person"
            e.updated_at = int(now())

        updated = self.store.update(endpoint_id, change)
        if updated is None:
            raise not_found("webhook endpoint", endpoint_id, "webhook_endpoint_id")
        if body.enabled:
            self.store.wake(endpoint_id)  # what waited while it was disabled goes now
        return updated

    def delete(self, tenant: str, endpoint_id: str) -> dict[str, Any]:
        self.store.delete(self.get(tenant, endpoint_id))
        return {"object": "webhook_endpoint.deleted", "id": endpoint_id, "deleted": True}

    def rotate(self, tenant: str, endpoint_id: str, body: WebhookRotate) -> WebhookEndpointWithSecret:
        self.get(tenant, endpoint_id)
        secret, sealed, hint = self._sealed()

        def change(e: Endpoint) -> None:
            keep = body.keep_old_secret_active_for_24_hours
            overlap = self.state.settings.webhooks.rotation_overlap_seconds
            e.old_secret, e.old_secret_until = (e.secret, now() + overlap) if keep else (None, None)
            e.secret, e.hint, e.updated_at = sealed, hint, int(now())

        updated = self.store.update(endpoint_id, change)
        if updated is None:
            raise not_found("webhook endpoint", endpoint_id, "webhook_endpoint_id")
        shown = WebhookEndpointObject.from_record(updated).model_dump()
        return WebhookEndpointWithSecret(**shown, signing_secret=secret)

    async def test(self, tenant: str, endpoint_id: str, event_type: str) -> WebhookTestResult:
        """Sends one example event now (``data.id`` names no real object), logs it with the endpoint's deliveries,
        and answers what the receiver said; a receiver that fails it is a 400 saying how."""
        endpoint = self.get(tenant, endpoint_id)
        if event_type not in EVENT_TYPES:
            raise ApiError(400, f"event_type: {event_type!r} is not an event sage-ft sends.", param="event_type")
        event_id = f"evt_test_{secrets.token_hex(10)}"
        event: dict[str, Any] = {
            "id": event_id,
            "type": event_type,
            "created_at": int(now()),
            "object_id": TEST_OBJECT[event_type.rsplit(".", 1)[0]],
        }
        body = event_body(event)
        client = WebhookClient(self.state.settings.webhooks)
        try:
            headers = headers_for(signing_secrets(self.state.secrets, endpoint), event_id, body)
            outcome = await client.send(endpoint.url, body, headers)
        finally:
            await client.aclose()
        attempt = Attempt(at=now(), status_code=outcome.status_code, error=outcome.error, latency_ms=outcome.latency_ms)
        delivery = Delivery(
            id=f"{event_id}.{endpoint.id}",
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=event_type,
            body=body,
            created_at=attempt.at,
            status="delivered" if outcome.ok else "failed",
            attempts=[attempt],
        )
        self.store.add_delivery(delivery)  # in the log; done already, so never due
        self.store.save_delivery(delivery)
        if not outcome.ok:
            raise ApiError(400, f"the test event was not delivered: {outcome.error}.", param="url", code="test_failed")
        assert outcome.status_code is not None
        return WebhookTestResult(
            object="webhook_endpoint.test",
            webhook_endpoint_id=endpoint.id,
            event_type=event_type,
            status_code=outcome.status_code,
            success=True,
        )

    def deliveries(self, tenant: str, endpoint_id: str, after: str | None, limit: int) -> dict[str, Any]:
        self.get(tenant, endpoint_id)
        found, more = self.store.deliveries(endpoint_id, after=after, limit=limit)
        return cursor_page([DeliveryObject.from_record(d) for d in found], more)
