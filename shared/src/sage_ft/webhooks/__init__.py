"""Webhooks: OpenAI's event types, the outbox every state change that users subscribe to is written to, and the store
of endpoints and deliveries (``sage_ft.webhooks.store``). Deliveries are sent by the gateway
(``sage_ft_gateway.services.deliveries``), signed as Standard Webhooks, which the ``openai`` SDK verifies.

The outbox is a Redis stream appended in the same MULTI as the transition it reports (``JobStore.update``,
``RunStore.update``): a process that dies after the transition cannot lose the event, and one that dies before it
recorded neither.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

JOB_EVENTS = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
RUN_EVENTS = {"completed": "eval.run.succeeded", "failed": "eval.run.failed", "canceled": "eval.run.canceled"}
EVENT_TYPES = (*JOB_EVENTS.values(), *RUN_EVENTS.values())
OUTBOX_MAX = 100_000  # events not yet fanned out that the stream keeps (a gateway consumes them within a second)


def outbox_key(prefix: str) -> str:
    return f"{prefix}:webhooks:outbox"


def record_event(pipe: Any, prefix: str, tenant: str, event_type: str, object_id: str, at: float) -> None:
    """Queue on ``pipe`` (inside the transition's MULTI) the event ``event_type`` of ``object_id``."""
    event = {"id": f"evt_{secrets.token_hex(12)}", "type": event_type, "tenant": tenant, "object_id": object_id}
    fields = {"event": json.dumps({**event, "created_at": int(at)})}
    pipe.xadd(outbox_key(prefix), fields, maxlen=OUTBOX_MAX, approximate=True)


def event_body(event: dict[str, Any]) -> str:
    """OpenAI's event object, as sent: receivers fetch the job or run by ``data.id`` with the API."""
    body = {
        "id": event["id"],
        "object": "event",
        "type": event["type"],
        "created_at": event["created_at"],
        "data": {"id": event["object_id"]},
    }
    return json.dumps(body, separators=(",", ":"))
