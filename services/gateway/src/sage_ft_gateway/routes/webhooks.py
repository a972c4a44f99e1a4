"""``/v1/webhook_endpoints`` and ``/v1/webhook_event_types``: OpenAI's webhook endpoints API, plus each endpoint's
delivery log (``/deliveries``, an extension)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from sage_ft.api_errors import error_responses
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.params import IdPath
from sage_ft_gateway.protocol.webhooks import (
    DeliveryList,
    WebhookCreate,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointObject,
    WebhookEndpointWithSecret,
    WebhookEventTypeList,
    WebhookRotate,
    WebhookTest,
    WebhookTestResult,
    WebhookUpdate,
)

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=error_responses(400, 401, 404, 503))
Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="List after this id.")]


@router.get("/webhook_event_types", response_model=WebhookEventTypeList)
def event_types(tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.webhooks.event_types()


@router.post("/webhook_endpoints", response_model=WebhookEndpointWithSecret)
def create_endpoint(body: WebhookCreate, tenant: Tenant, svc: Svc) -> WebhookEndpointWithSecret:
    return svc.webhooks.create(tenant, body)


@router.get("/webhook_endpoints", response_model=WebhookEndpointList)
def list_endpoints(tenant: Tenant, svc: Svc, after: After = None, limit: Limit = 20) -> dict[str, Any]:
    return svc.webhooks.list(tenant, after, limit)


@router.get("/webhook_endpoints/{webhook_endpoint_id}", response_model=WebhookEndpointObject)
def get_endpoint(webhook_endpoint_id: IdPath, tenant: Tenant, svc: Svc) -> WebhookEndpointObject:
    return WebhookEndpointObject.from_record(svc.webhooks.get(tenant, webhook_endpoint_id))


@router.post("/webhook_endpoints/{webhook_endpoint_id}", response_model=WebhookEndpointObject)
def update_endpoint(
    webhook_endpoint_id: IdPath, body: WebhookUpdate, tenant: Tenant, svc: Svc
) -> WebhookEndpointObject:
    return WebhookEndpointObject.from_record(svc.webhooks.update(tenant, webhook_endpoint_id, body))


@router.delete("/webhook_endpoints/{webhook_endpoint_id}", response_model=WebhookEndpointDeleted)
def delete_endpoint(webhook_endpoint_id: IdPath, tenant: Tenant, svc: Svc) -> dict[str, Any]:
    return svc.webhooks.delete(tenant, webhook_endpoint_id)


@router.post("/webhook_endpoints/{webhook_endpoint_id}/rotate_secret", response_model=WebhookEndpointWithSecret)
def rotate_secret(
    webhook_endpoint_id: IdPath, tenant: Tenant, svc: Svc, body: WebhookRotate | None = None
) -> WebhookEndpointWithSecret:
    return svc.webhooks.rotate(tenant, webhook_endpoint_id, body or WebhookRotate())


@router.post("/webhook_endpoints/{webhook_endpoint_id}/test", response_model=WebhookTestResult)
async def test_endpoint(webhook_endpoint_id: IdPath, body: WebhookTest, tenant: Tenant, svc: Svc) -> WebhookTestResult:
    return await svc.webhooks.test(tenant, webhook_endpoint_id, body.event_type)


@router.get("/webhook_endpoints/{webhook_endpoint_id}/deliveries", response_model=DeliveryList)
def list_deliveries(
    webhook_endpoint_id: IdPath, tenant: Tenant, svc: Svc, after: After = None, limit: Limit = 20
) -> dict[str, Any]:
    return svc.webhooks.deliveries(tenant, webhook_endpoint_id, after, limit)
