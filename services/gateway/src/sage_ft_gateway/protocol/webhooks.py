"""``/v1/webhook_endpoints`` and ``/v1/webhook_event_types``: OpenAI's webhook endpoint objects, and the delivery log
(an extension)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from sage_ft.webhooks.store import Delivery, Endpoint
from sage_ft_gateway.protocol.params import ApiModel

Name = Annotated[str, Field(min_length=1, max_length=256, description="A human-readable name for the endpoint.")]
Url = Annotated[str, Field(min_length=1, max_length=2048, description="The HTTPS URL that receives deliveries.")]
EventTypes = Annotated[list[str], Field(min_length=1, max_length=64, description="The events delivered to it.")]


class WebhookCreate(ApiModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    url: Url
    event_types: EventTypes


class WebhookUpdate(ApiModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    url: Url | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = Field(default=None, description="Extension: true re-enables a disabled endpoint.")


class WebhookRotate(ApiModel):
    model_config = ConfigDict(extra="forbid")
    keep_old_secret_active_for_24_hours: bool = False


class WebhookTest(ApiModel):
    model_config = ConfigDict(extra="forbid")
    event_type: str


class WebhookEndpointObject(ApiModel):
    object: Literal["webhook_endpoint"]
    id: str
    name: str
    url: str
    event_types: list[str]
    created_at: int
    updated_at: int | None
    signing_secret_hint: str
    status: Literal["enabled", "disabled"] = Field(description="Extension: disabled after repeated failures.")
    disabled_reason: str | None = None

    @classmethod
    def from_record(cls, endpoint: Endpoint) -> WebhookEndpointObject:
        return cls(
            object="webhook_endpoint",
            id=endpoint.id,
            name=endpoint.name,
            url=endpoint.url,
            event_types=endpoint.event_types,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            signing_secret_hint=endpoint.hint,
            status="enabled" if endpoint.enabled else "disabled",
            disabled_reason=endpoint.disabled_reason,
        )


class WebhookEndpointWithSecret(WebhookEndpointObject):
    signing_secret: str = Field(description="Shown once, here: keep it to verify deliveries.")


class WebhookEndpointList(ApiModel):
    object: Literal["list"]
    data: list[WebhookEndpointObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class WebhookEndpointDeleted(ApiModel):
    object: Literal["webhook_endpoint.deleted"]
    id: str
    deleted: bool


class WebhookTestResult(ApiModel):
    object: Literal["webhook_endpoint.test"]
    webhook_endpoint_id: str
    event_type: str
    status_code: int
    success: bool


class WebhookEventTypeList(ApiModel):
    object: Literal["list"]
    data: list[str]


class AttemptObject(ApiModel):
    attempted_at: int
    status_code: int | None
    error: str | None
    latency_ms: int


class DeliveryObject(ApiModel):
    object: Literal["webhook_endpoint.delivery"]
    id: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    created_at: int
    attempts: list[AttemptObject]
    next_attempt_at: int | None

    @classmethod
    def from_record(cls, d: Delivery) -> DeliveryObject:
        return cls(
            object="webhook_endpoint.delivery",
            id=d.id,
            event_id=d.event_id,
            event_type=d.event_type,
            status=d.status,
            created_at=int(d.created_at),
            attempts=[
                AttemptObject(attempted_at=int(a.at), status_code=a.status_code, error=a.error, latency_ms=a.latency_ms)
                for a in d.attempts
            ],
            next_attempt_at=int(d.next_attempt_at) if d.next_attempt_at is not None else None,
        )


class DeliveryList(ApiModel):
    object: Literal["list"]
    data: list[DeliveryObject]
    has_more: bool
    first_id: str | None
    last_id: str | None
