"""Webhook deliveries: every gateway runs this loop beside its maintenance loop.

Each pass turns new outbox events into deliveries (``WebhookStore.fan_out``), then starts a delivery task for each
delivery that is due, under a lease in Redis so that two gateways never send one attempt at once (short, and renewed
while the attempt runs). An attempt that
fails (no answer, a non-2xx or a redirect) is retried with exponential backoff and jitter until
``SAGE_WEBHOOK_RETRY_HOURS`` have passed; every try carries the same ``webhook-id`` (the event's id), so receivers
can de-duplicate. At most ``per_endpoint_concurrency`` attempts to one endpoint are in flight, so a dead receiver
holds a few slots, never the loop. An endpoint whose attempts fail ``disable_after_failures`` times in a row is
disabled (its deliveries wait, and go on once a person re-enables it). Everything lives in Redis: a gateway killed
at any point loses nothing, and the next pass (of any gateway) takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter

from sage_ft.jobs.model import now
from sage_ft.webhooks.store import Attempt, Delivery, Endpoint, WebhookStore
from sage_ft_gateway.state import GatewayState
from sage_ft_gateway.webhook_client import Outcome, WebhookClient, headers_for, signing_secrets

log = logging.getLogger(__name__)
DISABLED_RECHECK_S = 60.0  # a disabled endpoint's deliveries look again this often
PAGE, MAX_PAGES = 500, 20  # due deliveries read per pass: up to 10,000
# a delivery's lease while one attempt runs, renewed every third of it: a gateway killed mid-attempt holds the
# delivery back this long at most (a lease as long as the attempt's timeout held it 50 s)
LEASE_S = 6.0


class Deliverer:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.settings = state.settings.webhooks
        self.client = WebhookClient(self.settings)
        self.in_flight: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def store(self) -> WebhookStore:
        return self.state.webhooks

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.tick()
                except Exception:  # Redis away: the next pass tries again; nothing is lost
                    log.warning("webhook pass failed", exc_info=True)
                await asyncio.sleep(self.settings.poll_seconds)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.client.aclose()

    async def tick(self) -> None:
        await asyncio.to_thread(self.store.fan_out, self.state.instance)
        # page through everything due, so that a dead endpoint's backlog (skipped: its slots are full) cannot hide
        # the deliveries of others behind it
        for offset in range(0, PAGE * MAX_PAGES, PAGE):
            page = await asyncio.to_thread(self.store.due, offset, PAGE)
            for delivery_id in page:
                if len(self.tasks) >= self.settings.concurrency:
                    return
                await self._start(delivery_id)
            if len(page) < PAGE:
                return

    async def _start(self, delivery_id: str) -> None:
        endpoint_id = delivery_id.rsplit(".", 1)[-1]
        if self.in_flight[endpoint_id] >= self.settings.per_endpoint_concurrency:
            return
        if not await asyncio.to_thread(self.store.claim, delivery_id, self.state.instance, LEASE_S):
            return  # another gateway is sending it
        self.in_flight[endpoint_id] += 1
        task = asyncio.create_task(self._attempt(delivery_id, endpoint_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _attempt(self, delivery_id: str, endpoint_id: str) -> None:
        renewing = asyncio.create_task(self._renew(delivery_id))
        try:
            await self.attempt(delivery_id)
        except Exception:
            log.warning("webhook delivery %s: attempt failed to run", delivery_id, exc_info=True)
        finally:
            renewing.cancel()
            self.in_flight[endpoint_id] -= 1
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, delivery_id, self.state.instance)

    async def _renew(self, delivery_id: str) -> None:
        """Keep the delivery's lease while its attempt runs (a receiver may take ``timeout_seconds`` to answer)."""
        while True:
            await asyncio.sleep(LEASE_S / 3)
            with contextlib.suppress(Exception):  # Redis away: the attempt goes on; at worst another gateway resends
                await asyncio.to_thread(self.store.renew, delivery_id, self.state.instance, LEASE_S)

    async def attempt(self, delivery_id: str) -> None:
        delivery = await asyncio.to_thread(self.store.get_delivery, delivery_id)
        if delivery is None or delivery.status != "pending":
            if delivery is not None:
                await asyncio.to_thread(self.store.save_delivery, delivery)  # leaves the due set
            return
        endpoint = await asyncio.to_thread(self.store.get, delivery.endpoint_id)
        if endpoint is None:
            delivery.status = "failed"
            delivery.attempts.append(Attempt(at=now(), error="the endpoint was deleted", latency_ms=0))
            await asyncio.to_thread(self.store.save_delivery, delivery)
            return
        if not endpoint.enabled:
            delivery.next_attempt_at = now() + DISABLED_RECHECK_S
            await asyncio.to_thread(self.store.save_delivery, delivery)
            return
        headers = headers_for(signing_secrets(self.state.secrets, endpoint), delivery.event_id, delivery.body)
        outcome = await self.client.send(endpoint.url, delivery.body, headers)
        self.record(delivery, outcome)
        await asyncio.to_thread(self.store.save_delivery, delivery)
        await asyncio.to_thread(self.store.update, endpoint.id, lambda e: self.count(e, outcome))
        self.state.metrics.webhook_attempt(outcome.ok)
        log.info("webhook %s to %s: %s", delivery.event_type, endpoint.id, outcome.error or outcome.status_code)

    def record(self, delivery: Delivery, outcome: Outcome) -> None:
        at = now()
        delivery.attempts.append(
            Attempt(at=at, status_code=outcome.status_code, error=outcome.error, latency_ms=outcome.latency_ms)
        )
        if outcome.ok:
            delivery.status, delivery.next_attempt_at = "delivered", None
            return
        window_ends = delivery.created_at + self.settings.retry_hours * 3600
        if at >= window_ends:
            delivery.status, delivery.next_attempt_at = "failed", None
            return
        failures = sum(1 for a in delivery.attempts if a.error)
        wait = min(self.settings.backoff_max_seconds, self.settings.backoff_seconds * 2 ** (failures - 1))
        delivery.next_attempt_at = min(window_ends, at + wait * random.uniform(0.5, 1.5))

    def count(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """An endpoint's run of failures, and its disabling at the threshold."""
        if outcome.ok:
            endpoint.consecutive_failures = 0
            return
        endpoint.consecutive_failures += 1
        if endpoint.enabled and endpoint.consecutive_failures >= self.settings.disable_after_failures:
            endpoint.enabled = False
            endpoint.disabled_reason = (
                f"{endpoint.consecutive_failures} attempts in a row failed (the last: {outcome.error}); "
                "re-enable it to resume its deliveries"
            )


async def loop(state: GatewayState) -> None:
    await Deliverer(state).run()
