"""The model servers: one ``ServerPool`` owns every one serving starts, whichever kind of model runs on it.

A server is keyed by what it serves (vLLM: one per base model, every fine-tune of that base an adapter on it;
transformers: one per merged model; one pooling server per embedding model). The pool starts a server for a key,
reuses it while it is alive, restarts it with a larger LoRA slot when an adapter of a larger rank arrives (loading
again what it held), attaches and detaches models, stops one that is idle or has no models left, and stops them all
on close. It knows nothing of deployments: callers ask it for servers and read their state back.

Every launcher call runs on one long-lived thread (``LauncherThread``), so the servers keep one parent for serving's
lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx

from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.engines import Engine, make_engine
from sage_ft_serving.launchers import Launcher, ServerHandle, ServerSpec
from sage_ft_serving.launchers.owner import LauncherThread
from sage_ft_serving.metrics import ServingMetrics
from sage_ft_serving.plan import Plan
from sage_ft_serving.records import EngineStartError, Key, Server
from sage_ft_serving.settings import Settings

log = logging.getLogger(__name__)
SpecFor = Callable[[Plan], ServerSpec]  # how to start the server for a key, given the arguments it must take


class ServerPool:
    def __init__(self, settings: Settings, launcher: Launcher, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.launcher = launcher
        self.metrics = metrics
        self.owner = LauncherThread()  # every launcher call runs here: the servers' one long-lived parent thread
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=600.0))  # to the servers, shared by all
        self._servers: dict[str, Server] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._restarting: set[str] = set()

    # -- looking -------------------------------------------------------------------------------------------------

    def get(self, key: str | None) -> Server | None:
        """The server behind ``key`` in whatever state it is (None when there is none)."""
        return self._servers.get(key or "")

    def servers(self) -> list[Server]:
        return list(self._servers.values())

    def path_for_server(self, path: Path) -> str:
        """How the servers see a local path (the same path for processes; a volume path in containers)."""
        return self.launcher.path_for_server(path)

    # -- starting ------------------------------------------------------------------------------------------------

    async def ensure(
        self, key: str, engine: str, plan: Plan, spec_for: SpecFor, hot_loads: bool, grow_rank: bool = True
    ) -> Server:
        """The live server behind ``key``, started from ``spec_for(plan)`` when there is none. With ``grow_rank``, a
        server whose LoRA slot is smaller than ``plan``'s is restarted with the larger slot (one server per base
        model stays the rule) and what it held is loaded again."""
        async with self._locks[key]:
            server = await self._live(key)
            if server is not None and grow_rank and (plan.lora_rank or 0) > (server.plan.lora_rank or 0):
                return await self._restart(server, plan, spec_for)
            return server or await self.start(spec_for(plan), key, engine, plan, hot_loads)

    async def ensure_for(
        self, engine: Engine, artifact: Artifact, base_ref: str, plan: Plan, grow_rank: bool = True
    ) -> Server:
        """``ensure`` for what ``engine`` serves ``artifact`` on: its key (vLLM: one server per base model) and the
        command line the engine writes for it."""
        return await self.ensure(
            engine.server_key(artifact, base_ref, plan),
            engine.name,
            plan,
            lambda wider: engine.spec(artifact, base_ref, self.path_for_server, wider),
            hot_loads=engine.hot_loads and plan.mode == "adapter",
            grow_rank=grow_rank,
        )

    async def start(self, spec: ServerSpec, key: str, engine: str, plan: Plan, hot_loads: bool) -> Server:
        """Start ``spec`` as the server behind ``key`` and wait until it is healthy (stopping it if it is not)."""
        handle = await self.launch(spec)
        server = Server(key=key, engine=engine, handle=handle, plan=plan, hot_loads=hot_loads)
        self._servers[key] = server
        try:
            await self._wait_healthy(server, spec.health_path)
        except BaseException:
            await self.stop(server, "failed to start")
            raise
        server.state, server.ready_at = "ready", time.time()
        self.metrics.servers.labels(engine=engine).inc()
        return server

    async def launch(self, spec: ServerSpec) -> ServerHandle:
        """Start a model server from the owner thread, whichever thread or event loop asks."""
        return await self.owner.call(self.launcher.start, spec)

    async def _live(self, key: str) -> Server | None:
        """The ready, running server behind ``key`` (its lock held); a dead or failed one is stopped and dropped."""
        server = self._servers.get(key)
        if server is not None and server.state == "ready" and await self.alive(server):
            return server
        if server is not None:
            await self.stop(server, "replaced")
        return None

    def restarting(self, key: str | None) -> bool:
        """The server behind ``key`` is being restarted: what it held is coming back (read as deploying)."""
        return (key or "") in self._restarting

    async def _restart(self, old: Server, plan: Plan, spec_for: SpecFor) -> Server:
        rank = max(plan.lora_rank or 0, old.plan.lora_rank or 0)
        log.info(
            "restarting %s: an adapter needs --max-lora-rank %d (was %s)", old.handle.name, rank, old.plan.lora_rank
        )
        engine = make_engine(old.engine, self.settings)
        held = dict(old.attached)
        shared = {k: m for k, m in old.models.items() if k not in old.attached}  # base models asked for by name
        self._restarting.add(old.key)
        try:
            await self.stop(old, f"restarting for LoRA rank {rank}")
            wider = plan.with_rank(rank)
            server = await self.start(spec_for(wider), old.key, old.engine, wider, old.hot_loads)
            try:
                async with server.lock:
                    for key, artifact in held.items():
                        path = self.path_for_server(artifact.path)
                        server.models[key] = await engine.attach(self.client, server.handle, artifact, path, plan)
                        server.attached[key] = artifact
                    server.models.update(shared)
            except BaseException:
                await self.stop(server, "loading its adapters again failed")
                raise
        finally:
            self._restarting.discard(old.key)
        return server

    async def _wait_healthy(self, server: Server, path: str) -> None:
        timeout = self.settings.serving.start_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            if not await self.alive(server):
                why = await self.owner.call(self.launcher.describe_failure, server.handle)
                raise EngineStartError(f"{server.handle.name} died while starting: {why}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get(server.handle.url + path, timeout=5)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                why = await self.owner.call(self.launcher.describe_failure, server.handle)
                raise EngineStartError(f"{server.handle.name} was not healthy within {timeout:.0f} s: {why}")
            await asyncio.sleep(0.5)

    # -- models on a server --------------------------------------------------------------------------------------

    async def attach(self, server: Server, engine: Engine, key: Key, artifact: Artifact, plan: Plan) -> str:
        """Load ``artifact`` onto ``server`` for ``key``; returns the model id requests use there."""
        async with server.lock:
            model = await engine.attach(self.client, server.handle, artifact, self.path_for_server(artifact.path), plan)
            server.models[key], server.attached[key] = model, artifact
        if server.hot_loads:
            self.metrics.adapter_loads.inc()
        server.last_used = time.monotonic()
        return model

    def share(self, server: Server, key: Key, model: str) -> None:
        """``key`` answers from a model the server serves already (a base model under its own name)."""
        server.models[key] = model
        server.last_used = time.monotonic()

    async def detach(self, server: Server, key: Key) -> None:
        """``key`` no longer served there: its adapter unloaded (if others stay), the server stopped if none do."""
        async with server.lock:
            model = server.models.pop(key, None)
            attached = server.attached.pop(key, None)  # None for a shared base: nothing to unload
            if model and attached and server.hot_loads and server.models and server.state == "ready":
                try:
                    await make_engine(server.engine, self.settings).detach(self.client, server.handle, model)
                    self.metrics.adapter_unloads.inc()
                except Exception as err:  # the adapter stays loaded but unreachable; nothing routes to it
                    log.warning("unloading %s from %s failed: %s", model, server.handle.name, err)
        if not server.models:
            await self.stop(server, "no models left")

    # -- stopping ------------------------------------------------------------------------------------------------

    async def alive(self, server: Server) -> bool:
        return bool(await self.owner.call(self.launcher.alive, server.handle))

    async def stop(self, server: Server, why: str) -> None:
        if self._servers.get(server.key) is server:
            del self._servers[server.key]
        if server.state == "ready":
            self.metrics.servers.labels(engine=server.engine).dec()
        server.state = "stopped"
        log.info("stopping %s (%s)", server.handle.name, why)
        await self.owner.call(self.launcher.stop, server.handle)

    async def reap(self) -> int:
        """Stop servers idle past the timeout, and drop servers that died; returns how many went."""
        idle, gone = self.settings.serving.idle_timeout_seconds, 0
        for server in self.servers():
            if server.state != "ready":
                continue
            if time.monotonic() - server.last_used > idle:
                await self.stop(server, f"idle for more than {idle:.0f} s")
                gone += 1
            elif not await self.alive(server):
                await self.stop(server, "it exited")
                gone += 1
        return gone

    async def cleanup_orphans(self) -> int:
        return await self.owner.call(self.launcher.cleanup_orphans)

    async def close(self) -> None:
        for server in self.servers():
            await self.stop(server, "serving is shutting down")
        await self.owner.call(self.launcher.close)
        self.owner.close()
        await self.client.aclose()
