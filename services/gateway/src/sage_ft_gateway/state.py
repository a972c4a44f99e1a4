"""``GatewayState``: the connections every service shares (the job store, the object store, the broker, the serving
client, the authenticator, metrics). Built in the lifespan, never at import; the services over it are kept on
``app.state.services`` (``deps.Services``), and routes reach only those."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from sage_ft.evals.runstore import EvalRun, RunStore
from sage_ft.jobs import Job, JobStore
from sage_ft.jobs.broker import TaskSender, broker_holds, queue_depth
from sage_ft.jobs.secrets import SecretBox
from sage_ft.storage import ObjectStore, make_store
from sage_ft.storage.scoped import tenant_store
from sage_ft.webhooks.store import WebhookStore
from sage_ft_gateway.auth import Authenticator
from sage_ft_gateway.metrics import GatewayMetrics
from sage_ft_gateway.services.health import Readiness
from sage_ft_gateway.serving_client import ServingClient
from sage_ft_gateway.settings import Settings


class GatewayState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs = JobStore.from_url(settings.jobs.redis_url.get_secret_value(), settings.jobs.key_prefix)
        self.eval_runs = RunStore(self.jobs)
        self.webhooks = WebhookStore(self.jobs.r, settings.jobs.key_prefix)
        self.store: ObjectStore = make_store(settings.storage)
        self.auth = Authenticator(settings.gateway.auth_enabled, settings.gateway.key_table())
        self.metrics = GatewayMetrics()
        self.tasks = TaskSender(settings.jobs, "sage_ft_gateway")
        self._broker: Any = redis.Redis.from_url(settings.jobs.broker(), socket_timeout=10, socket_connect_timeout=5)
        self.instance = uuid.uuid4().hex
        self.secrets = SecretBox(settings.jobs.secrets_key)
        self.serving = ServingClient(settings.gateway.serving_url)
        self._pubsub_client: Any = None
        gw = settings.gateway
        self.readiness = Readiness(
            {"redis": self.jobs.ping, "object_store": lambda: self.store.stat("readyz-probe")},
            gw.probe_timeout_seconds,
            gw.probe_cache_seconds,
        )

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Callable[[float], Awaitable[bool]]]:
        """Subscribe to ``channel``; yields ``wake(timeout)``, True once a message came (False on timeout)."""
        if self._pubsub_client is None:
            self._pubsub_client = redis.asyncio.Redis.from_url(
                self.settings.jobs.redis_url.get_secret_value(), socket_connect_timeout=5
            )
        pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)

        async def wake(timeout: float) -> bool:
            got = await pubsub.get_message(timeout=timeout) is not None
            while got and await pubsub.get_message(timeout=0) is not None:
                pass  # one wake-up for a burst of news
            return got

        try:
            yield wake
        finally:
            await pubsub.aclose()

    def tenant_store(self, tenant: str) -> ObjectStore:
        return tenant_store(self.store, tenant)

    def enqueue_train(self, job: Job) -> None:
        self.tasks.train(job.id, task_id=f"{job.id}.{uuid.uuid4().hex[:8]}")

    def enqueue_merge(self, tenant: str, model: str) -> None:
        self.tasks.merge(tenant, model)

    def enqueue_eval(self, run: EvalRun) -> None:
        self.tasks.evaluate(run.id, task_id=f"{run.id}.{uuid.uuid4().hex[:8]}")

    def in_broker(self, job_id: str) -> bool:
        return broker_holds(self._broker, [self.settings.jobs.train_queue], job_id)

    def eval_in_broker(self, run_id: str) -> bool:
        return broker_holds(self._broker, [self.settings.jobs.eval_queue], run_id)

    def queue_depths(self) -> dict[str, int]:
        jobs = self.settings.jobs
        queues = {jobs.train_queue, jobs.merge_queue, jobs.eval_queue}
        return {q: queue_depth(self._broker, q) for q in sorted(queues)}

    async def aclose(self) -> None:
        await self.serving.aclose()
        if self._pubsub_client is not None:
            await self._pubsub_client.aclose()

    def close(self) -> None:
        self.readiness.close()
        self.jobs.r.close()
        self._broker.close()
