"""What serving keeps on ``app.state.serving``: the server pool, the deployment manager over it, the proxy to the
servers and the metrics. Built in the lifespan (nothing is contacted at import), closed last, which stops every model
server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx

from sage_ft.jobs.broker import TaskSender
from sage_ft.storage import make_store
from sage_ft_serving.launchers import Launcher, make_launcher
from sage_ft_serving.manager import DeploymentManager
from sage_ft_serving.metrics import EngineMetricsCollector, ServingMetrics
from sage_ft_serving.pool import ServerPool
from sage_ft_serving.proxy import ModelProxy
from sage_ft_serving.sandbox import GraderHost
from sage_ft_serving.settings import Settings

log = logging.getLogger(__name__)


class ServingState:
    def __init__(
        self,
        settings: Settings,
        launcher: Launcher | None = None,
        enqueue_merge: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ServingMetrics()
        if enqueue_merge is None:
            enqueue_merge = TaskSender(settings.jobs, "sage_ft_serving").merge
        self.pool = ServerPool(settings, launcher or make_launcher(settings), self.metrics)
        self.manager = DeploymentManager(settings, make_store(settings.storage), self.pool, self.metrics, enqueue_merge)
        self.proxy = ModelProxy(self.pool.client, self.metrics)
        self.scrapes: dict[str, str] = {}
        self.metrics.add_collector(EngineMetricsCollector(lambda: self.scrapes))
        self._reaper: asyncio.Task[None] | None = None
        self.graders = GraderHost(settings)

    async def start(self) -> None:
        removed = await self.pool.cleanup_orphans()
        if removed:
            log.info("removed %d model servers left by an earlier run", removed)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serving.reap_interval_seconds)
            try:
                await self.manager.reap()
            except Exception:
                log.exception("idle reaper pass failed")

    async def refresh_engine_metrics(self) -> None:
        """Each ready vLLM server's own /metrics text (``vllm:*``), re-exported with a ``server`` label."""
        for server in self.pool.servers():
            if server.state == "ready" and server.engine == "vllm":
                with contextlib.suppress(httpx.HTTPError):
                    resp = await self.pool.client.get(server.handle.url + "/metrics", timeout=5)
                    if resp.status_code == 200:
                        server.metrics_text = resp.text
        self.scrapes.clear()
        self.scrapes.update({s.handle.name: s.metrics_text for s in self.pool.servers() if s.metrics_text})

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.manager.close()
        await self.pool.close()
