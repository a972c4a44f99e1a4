"""Webhook endpoints and their deliveries in Redis.

- ``{p}:webhook:<id>``: an endpoint (``Endpoint``), its signing secrets sealed with the operator's key;
  ``{p}:t:<tenant>:webhooks``: the tenant's endpoint ids by creation time.
- ``{p}:webhooks:outbox``: the events (``sage_ft.webhooks.record_event``), read by the consumer group ``fanout``: each
  becomes one delivery per subscribed endpoint of its tenant, then is acknowledged. An entry a crashed gateway had
  read is claimed again after ``CLAIM_IDLE_MS``. A delivery's id is the event's and the endpoint's, so a second
  fan-out of one event makes nothing new.
- ``{p}:webhooks:delivery:<id>``: a delivery (``Delivery``) with every attempt; ``{p}:webhooks:due``: the ids of
  those waiting, by the time of their next attempt; ``{p}:webhooks:log:<endpoint>``: an endpoint's deliveries, newest
  kept (``LOG_KEPT``).
- ``{p}:webhooks:sending:<id>``: the lease of the gateway sending one attempt (another gateway leaves it alone),
  short and renewed while the attempt runs, so a gateway killed mid-attempt holds the delivery back seconds, not
  the attempt's whole timeout (``sage_ft.jobs.lease``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

import redis
from pydantic import BaseModel, Field

from sage_ft.jobs.lease import KeyLeases
from sage_ft.jobs.model import now
from sage_ft.webhooks import event_body, outbox_key

GROUP = "fanout"
# an outbox entry read and not acknowledged this long is taken over: its reader died (a fan-out takes milliseconds,
# and a second one of the same event adds nothing: deliveries are made with SET NX)
CLAIM_IDLE_MS = 5_000
LOG_KEPT = 1000
KEPT_S = 30 * 86400  # a finished delivery's record, for the log


class Endpoint(BaseModel):
    id: str
    tenant: str
    name: str
    url: str
    event_types: list[str]
    created_at: int
    updated_at: int | None = None
    secret: str  # sealed
    hint: str
    old_secret: str | None = None  # sealed; still signs until old_secret_until (a rotation's overlap)
    old_secret_until: float | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive_failures: int = 0


class Attempt(BaseModel):
    at: float
    status_code: int | None = None
    error: str | None = None
    latency_ms: int


class Delivery(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    body: str
    created_at: float
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: list[Attempt] = Field(default_factory=list)
    next_attempt_at: float | None = None


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookStore:
    def __init__(self, client: redis.Redis, prefix: str = "sage") -> None:
        self.r: Any = client
        self.p = prefix
        self._grouped = False  # the outbox's consumer group is known to exist
        self.leases = KeyLeases(client)

    # -- endpoints ----------------------------------------------------------------------------------------------

    def _endpoint(self, endpoint_id: str) -> str:
        return f"{self.p}:webhook:{endpoint_id}"

    def _tenant(self, tenant: str) -> str:
        return f"{self.p}:t:{tenant}:webhooks"

    def put(self, endpoint: Endpoint) -> None:
        pipe = self.r.pipeline()
        pipe.set(self._endpoint(endpoint.id), endpoint.model_dump_json())
        pipe.zadd(self._tenant(endpoint.tenant), {endpoint.id: endpoint.created_at}, nx=True)
        pipe.execute()

    def get(self, endpoint_id: str) -> Endpoint | None:
        raw = self.r.get(self._endpoint(endpoint_id))
        return Endpoint.model_validate_json(raw) if raw else None

    def get_for(self, tenant: str, endpoint_id: str) -> Endpoint | None:
        """The endpoint if it is ``tenant``'s; another tenant's looks exactly like a missing one."""
        found = self.get(endpoint_id)
        return found if found is not None and found.tenant == tenant else None

    def list_for(self, tenant: str) -> list[Endpoint]:
        ids = self.r.zrange(self._tenant(tenant), 0, -1)
        raws = self.r.mget([self._endpoint(i.decode() if isinstance(i, bytes) else i) for i in ids]) if ids else []
        return [Endpoint.model_validate_json(raw) for raw in raws if raw]

    def delete(self, endpoint: Endpoint) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self._endpoint(endpoint.id))
        pipe.zrem(self._tenant(endpoint.tenant), endpoint.id)
        pipe.execute()

    def update(self, endpoint_id: str, change: Any) -> Endpoint | None:
        """Compare-and-set on the endpoint: ``change`` edits a copy in place (deliveries and the API both write)."""
        key = self._endpoint(endpoint_id)

        def attempt(pipe: Any) -> Endpoint | None:
            raw = pipe.get(key)
            if raw is None:
                return None
            endpoint = Endpoint.model_validate_json(raw)
            change(endpoint)
            pipe.multi()
            pipe.set(key, endpoint.model_dump_json())
            return endpoint

        result: Endpoint | None = self.r.transaction(attempt, key, value_from_callable=True)
        return result

    # -- the outbox and its fan-out -------------------------------------------------------------------------------

    def fan_out(self, consumer: str, count: int = 100) -> int:
        """Turn waiting events into deliveries: those no one has read, and those a dead consumer read and never
        acknowledged. Returns how many events were handled."""
        stream = outbox_key(self.p)
        if not self._grouped:
            try:
                self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as err:  # BUSYGROUP: it exists
                if "BUSYGROUP" not in str(err):
                    raise
            self._grouped = True
        try:
            _, claimed, _ = self.r.xautoclaim(stream, GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=count)
            fresh = self.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
        except redis.ResponseError as err:  # NOGROUP: a Redis that lost it (no persistence); made again next pass
            self._grouped = "NOGROUP" not in str(err)
            raise
        entries = list(claimed) + [e for _, batch in fresh for e in batch]
        for entry_id, fields in entries:
            raw = fields.get(b"event") or fields.get("event")
            self._deliveries_for(json.loads(raw))
            pipe = self.r.pipeline()
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            pipe.execute()
        return len(entries)

    def _deliveries_for(self, event: dict[str, Any]) -> None:
        body = event_body(event)
        at = now()
        for endpoint in self.list_for(event["tenant"]):
            if event["type"] not in endpoint.event_types:
                continue
            delivery = Delivery(
                id=f"{event['id']}.{endpoint.id}",
                endpoint_id=endpoint.id,
                event_id=event["id"],
                event_type=event["type"],
                body=body,
                created_at=at,
                next_attempt_at=at,
            )
            self.add_delivery(delivery)

    def add_delivery(self, delivery: Delivery) -> bool:
        """Record ``delivery`` and make it due now; False when it was already there."""
        if not self.r.set(self._delivery(delivery.id), delivery.model_dump_json(), nx=True):
            return False
        pipe = self.r.pipeline()
        if delivery.status == "pending":
            pipe.zadd(self._due, {delivery.id: delivery.next_attempt_at or now()})
        log = self._log(delivery.endpoint_id)
        pipe.zadd(log, {delivery.id: delivery.created_at})
        pipe.zremrangebyrank(log, 0, -LOG_KEPT - 1)
        pipe.execute()
        return True

    # -- deliveries -----------------------------------------------------------------------------------------------

    @property
    def _due(self) -> str:
        return f"{self.p}:webhooks:due"

    def _delivery(self, delivery_id: str) -> str:
        return f"{self.p}:webhooks:delivery:{delivery_id}"

    def _log(self, endpoint_id: str) -> str:
        return f"{self.p}:webhooks:log:{endpoint_id}"

    def due(self, offset: int = 0, limit: int = 500) -> list[str]:
        """Deliveries whose next attempt is due, oldest first (a page of them)."""
        ids = self.r.zrangebyscore(self._due, "-inf", now(), start=offset, num=limit)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    def _sending(self, delivery_id: str) -> str:
        return f"{self.p}:webhooks:sending:{delivery_id}"

    def claim(self, delivery_id: str, owner: str, lease_s: float) -> bool:
        return self.leases.claim(self._sending(delivery_id), owner, lease_s)

    def renew(self, delivery_id: str, owner: str, lease_s: float) -> bool:
        return self.leases.renew(self._sending(delivery_id), owner, lease_s)

    def release(self, delivery_id: str, owner: str) -> None:
        self.leases.release(self._sending(delivery_id), owner)

    def wake(self, endpoint_id: str) -> None:
        """Make the endpoint's waiting deliveries due now (it was re-enabled)."""
        pipe = self.r.pipeline()
        for delivery_id in self.r.zrange(self._log(endpoint_id), 0, -1):
            pipe.zadd(self._due, {delivery_id: now()}, xx=True)  # only those still waiting
        pipe.execute()

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        raw = self.r.get(self._delivery(delivery_id))
        return Delivery.model_validate_json(raw) if raw else None

    def save_delivery(self, delivery: Delivery) -> None:
        """The delivery after an attempt: due again at ``next_attempt_at``, or done (delivered or given up)."""
        pipe = self.r.pipeline()
        pipe.set(self._delivery(delivery.id), delivery.model_dump_json())
        if delivery.status == "pending" and delivery.next_attempt_at is not None:
            pipe.zadd(self._due, {delivery.id: delivery.next_attempt_at})
        else:
            pipe.zrem(self._due, delivery.id)
            pipe.expire(self._delivery(delivery.id), KEPT_S)
        pipe.execute()

    def deliveries(self, endpoint_id: str, *, after: str | None, limit: int) -> tuple[list[Delivery], bool]:
        """Newest first; ``after`` is the last id of the previous page."""
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.r.zrevrange(self._log(endpoint_id), 0, -1)]
        if after is not None:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
        page = ids[: limit + 1]
        raws = self.r.mget([self._delivery(i) for i in page[:limit]]) if page else []
        return [Delivery.model_validate_json(r) for r in raws if r], len(page) > limit
