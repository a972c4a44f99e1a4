"""Gateway metrics: requests by route template and status, latency, jobs by status and queue depth.

Labels carry route templates (``/v1/fine_tuning/jobs/{job_id}``), never ids, tenants or keys. Job counts and
queue depth are read from Redis when Prometheus scrapes, so several gateway replicas report the same truth.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sage_ft.jobs.model import JobStatus, now


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sage_ft_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sage_ft_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        self.webhook_attempts = Counter(
            "sage_ft_webhook_attempts_total",
            "Webhook delivery attempts by outcome (delivered: a 2xx answer).",
            ["outcome"],
            registry=self.registry,
        )

    def webhook_attempt(self, ok: bool) -> None:
        self.webhook_attempts.labels(outcome="delivered" if ok else "failed").inc()

    def add_state_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class StateCollector(Collector):
    """Job-store state read at scrape time: jobs by status, queue depth, the oldest queued job's age, and running
    jobs whose lease expired (the reaper should hand them back within seconds; if they stay, something is stuck)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "sage_ft_jobs", "Jobs by status (active ones counted live, finished ones in total).", labels=["status"]
        )
        depth = GaugeMetricFamily("sage_ft_queue_depth_messages", "Messages waiting in a queue.", labels=["queue"])
        oldest = GaugeMetricFamily("sage_ft_queue_oldest_job_age_seconds", "Age of the oldest queued job (0: none).")
        expired = GaugeMetricFamily("sage_ft_jobs_lease_expired", "Running jobs whose worker lease has expired.")
        try:
            active = self.state.jobs.active_jobs()
            counts = self.state.jobs.count_by_status(active)
            for status in JobStatus:
                jobs.add_metric([status.value], counts.get(status.value, 0))
            for queue, n in self.state.queue_depths().items():
                depth.add_metric([queue], n)
        except Exception:  # a scrape must not fail because Redis blinked; the gauges are just absent this time
            return
        at = now()
        queued = [at - (j.enqueued_at or j.created_at) for j in active if j.status == JobStatus.QUEUED]
        oldest.add_metric([], max(queued, default=0.0))
        expired.add_metric([], sum(1 for j in active if j.status == JobStatus.RUNNING and j.lease_expires_at < at))
        yield from (jobs, depth, oldest, expired)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task), labelled with the matched route's template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - start)
