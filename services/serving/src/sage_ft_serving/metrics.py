"""Serving metrics (``sage_ft_*``), plus the model servers' own ``/metrics`` (vLLM's ``vllm:*``) re-exported.

Each model server's families are merged under one name with a ``server`` label added, so two vLLM servers do not
produce duplicate families. No tenant ids or secrets in labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deployments = Gauge(
            "sage_ft_deployments", "Deployments by state and engine.", ["state", "engine"], registry=self.registry
        )
        self.cold_start = Histogram(
            "sage_ft_cold_start_seconds",
            "Deploy request to ready: fetch, engine start, adapter load.",
            ["engine"],
            buckets=(1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600),
            registry=self.registry,
        )
        self.proxy_latency = Histogram(
            "sage_ft_proxy_request_duration_seconds",
            "Proxied OpenAI requests, to the last byte.",
            ["route", "status"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.tokens = Counter(
            "sage_ft_generated_tokens_total", "Completion tokens generated.", ["engine"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "sage_ft_prompt_tokens_total", "Prompt tokens processed.", ["engine"], registry=self.registry
        )
        self.adapter_loads = Counter("sage_ft_adapter_loads_total", "LoRA adapters hot-loaded.", registry=self.registry)
        self.adapter_unloads = Counter(
            "sage_ft_adapter_unloads_total", "LoRA adapters unloaded.", registry=self.registry
        )
        self.servers = Gauge(
            "sage_ft_model_servers", "Running model servers by engine.", ["engine"], registry=self.registry
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class EngineMetricsCollector(Collector):
    """Re-exports the latest scrape of every model server, with a ``server`` label."""

    def __init__(self, scrapes: Callable[[], dict[str, str]]) -> None:
        self.scrapes = scrapes  # server name -> its last /metrics text

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for server, text in self.scrapes().items():
            try:
                families = list(text_string_to_metric_families(text))
            except ValueError:
                continue
            for family in families:
                if family.name.startswith(("python_", "process_")):
                    continue  # the server's own runtime; ours is in the serving process metrics
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "server": server}, sample.value, sample.timestamp)
        return list(merged.values())
