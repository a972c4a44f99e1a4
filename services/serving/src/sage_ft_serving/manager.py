"""Deployments and the model servers behind them.

A deployment is one published model made servable for one tenant: its part fetched and verified, a server for it
running and healthy, and (vLLM) its adapter hot-loaded there. Servers are keyed by the engine: vLLM runs one server
per base model and every fine-tune of that base is an adapter on it; transformers runs one server per merged model.
A server idle longer than the timeout is stopped (scale to zero); its deployments become ``stopped`` and the next
request brings them back. Closing the manager stops every server it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from sage_ft.api_errors import ApiError
from sage_ft.jobs.spec import local_model_dir
from sage_ft.storage import IntegrityError, ObjectStore
from sage_ft.storage.manifest import Manifest, not_found_message
from sage_ft.storage.merges import clear_merge_failure, merge_failure
from sage_ft.storage.scoped import tenant_store
from sage_ft_serving import artifacts, bases, embeddings
from sage_ft_serving.artifacts import ArtifactError
from sage_ft_serving.engines import ENGINES, Engine, choose_engine, make_engine, servers_get_gpus
from sage_ft_serving.launchers import Launcher, ServerHandle, ServerSpec
from sage_ft_serving.launchers.owner import LauncherThread
from sage_ft_serving.metrics import ServingMetrics
from sage_ft_serving.plan import Limits, NotServableError, Plan, make_plan
from sage_ft_serving.records import Deployment, EngineStartError, Key, Server
from sage_ft_serving.settings import Settings

log = logging.getLogger(__name__)


class DeploymentManager:
    def __init__(self, settings: Settings, store: ObjectStore, launcher: Launcher, metrics: ServingMetrics,
                 enqueue_merge: Callable[[str, str], None]) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.launcher = launcher
        self.owner = LauncherThread()  # every launcher call runs here: the servers' one long-lived parent thread
        self.metrics = metrics
        self.enqueue_merge = enqueue_merge
        self.deployments: dict[Key, Deployment] = {}
        self.servers: dict[str, Server] = {}
        self._server_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=600.0))

    # -- lookups ---------------------------------------------------------------------------------------------

    async def resolve(self, tenant: str, name: str) -> Manifest:
        store = tenant_store(self.store, tenant)
        manifest = await run_in_threadpool(artifacts.resolve, store, name)
        if manifest is None:  # an installed base model, asked for by its own name
            manifest = bases.base_manifest(self.settings.paths.resolved_models_root(), name)
        if manifest is None:
            message = await run_in_threadpool(not_found_message, store, name)
            raise ApiError(404, message, param="model", code="model_not_found")
        return manifest

    def find(self, tenant: str, name: str) -> Deployment | None:
        """A deployment by model name or alias (newest first for aliases)."""
        if (tenant, name) in self.deployments:
            return self.deployments[(tenant, name)]
        aliased = [d for (t, _), d in self.deployments.items() if t == tenant and d.alias == name]
        return max(aliased, key=lambda d: d.created_at) if aliased else None

    def listing(self, tenant: str) -> list[dict[str, Any]]:
        deps = sorted((d for (t, _), d in self.deployments.items() if t == tenant), key=lambda d: d.created_at)
        return [d.to_api(self.servers.get(d.server_key or "")) for d in deps]

    def describe(self, dep: Deployment) -> dict[str, Any]:
        return dep.to_api(self.servers.get(dep.server_key or ""))

    # -- planning --------------------------------------------------------------------------------------------

    def limits(self) -> Limits:
        cfg = self.settings.serving
        return Limits(max_model_len=cfg.max_model_len, max_lora_rank=cfg.max_lora_rank,
                      gpu=servers_get_gpus(self.settings), kv_cache_gb=cfg.vllm_cpu_kv_cache_gb,
                      gpu_memory_gb=cfg.gpu_memory_gb, gpu_memory_utilization=cfg.gpu_memory_utilization)  # fmt: skip

    async def plan(self, tenant: str, manifest: Manifest, engine: Engine) -> Plan:
        """The pre-deploy check: engine arguments from the artifact, or a 422 saying why it cannot be served."""
        base_dir = local_model_dir(self.settings.paths.resolved_models_root(), manifest.base_model)
        store = tenant_store(self.store, tenant)
        try:
            if base_dir is not None and bases.is_base(manifest):
                return await run_in_threadpool(bases.base_plan, engine, base_dir, self.limits())
            inputs = await run_in_threadpool(artifacts.plan_inputs, store, manifest, base_dir)
            return make_plan(engine.hot_loads, inputs, self.limits())
        except NotServableError as err:
            raise ApiError(422, f"'{manifest.name}' cannot be served by {engine.name}: {err}", param="model",
                           code=err.code) from None  # fmt: skip
        except IntegrityError as err:
            raise ApiError(422, f"refused to serve {manifest.name}: {err}", param="model",
                           code="checksum_mismatch") from None  # fmt: skip
        except ArtifactError as err:
            raise ApiError(422, f"refused to serve {manifest.name}: {err}", param="model",
                           code="unsafe_artifact") from None  # fmt: skip

    # -- deploy ----------------------------------------------------------------------------------------------

    async def deploy(self, tenant: str, name: str, engine: str | None = None) -> Deployment:
        """Start (or keep) a deployment of ``name``; returns at once, with the work going on in a task."""
        if engine is not None and engine not in (*ENGINES, "auto"):
            raise ApiError(400, f"engine: unknown engine '{engine}'; choose one of {', '.join(ENGINES)} or auto",
                           param="engine", code="invalid_engine")  # fmt: skip
        engine_name = choose_engine(self.settings, engine)
        manifest = await self.resolve(tenant, name)
        key = (tenant, manifest.name)
        current = self.deployments.get(key)
        eng = make_engine(engine_name, self.settings)
        plan = await self.plan(tenant, manifest, eng)
        fresh = plan.part not in manifest.parts or (current is not None and current.digest == artifacts.part_digest(
            manifest, plan.part))  # fmt: skip
        if current is not None and current.engine == engine_name and current.state in ("deploying", "ready") and fresh:
            return current
        if current is not None:
            await self._detach(current)
        dep = Deployment(tenant=tenant, model=manifest.name, engine=engine_name, plan=plan, alias=manifest.alias)
        self.deployments[key] = dep
        dep.task = asyncio.create_task(self._bring_up(dep, manifest, eng), name=f"deploy {manifest.name}")
        self._count()
        return dep

    async def wait(self, dep: Deployment, timeout: float) -> Deployment:
        if dep.state == "deploying" and dep.task is not None and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(dep.task), timeout)
        return dep

    async def _bring_up(self, dep: Deployment, manifest: Manifest, engine: Engine) -> None:
        started = time.monotonic()
        plan = dep.plan
        try:
            if bases.is_base(manifest):
                await bases.bring_up(self, dep, engine, self._base_ref(manifest))
                return
            if plan.part == "merged" and "merged" not in manifest.parts:
                manifest = await self._merge(dep.tenant, manifest, plan.reason)
            store = tenant_store(self.store, dep.tenant)
            artifact = await run_in_threadpool(artifacts.fetch, store, manifest, plan.part, self.settings.cache_dir)
            dep.digest = artifact.digest
            server = await self._server(engine, artifact, self._base_ref(manifest), plan)
            async with server.lock:
                dep.engine_model = await engine.attach(self.client, server.handle, artifact,
                                                       self.launcher.path_for_server(artifact.path), plan)  # fmt: skip
                server.models[(dep.tenant, dep.model)] = dep.engine_model
                server.attached[(dep.tenant, dep.model)] = artifact
            if server.hot_loads:
                self.metrics.adapter_loads.inc()
            server.last_used = time.monotonic()
            dep.server_key, dep.state, dep.ready_at = server.key, "ready", time.time()
            dep.cold_start_seconds = round(time.monotonic() - started, 3)
            self.metrics.cold_start.labels(engine=dep.engine).observe(dep.cold_start_seconds)
            log.info("deployed %s on %s in %.1fs (%s)", dep.model, server.handle.name, dep.cold_start_seconds,
                     plan.mode)  # fmt: skip
        except IntegrityError as err:
            dep.fail("checksum_mismatch", f"refused to serve {dep.model}: {err}")
        except ArtifactError as err:
            dep.fail("unsafe_artifact", f"refused to serve {dep.model}: {err}")
        except MergeFailedError as err:
            dep.fail(err.code, str(err))
        except (EngineStartError, TimeoutError) as err:
            dep.fail("engine_start_failed", str(err))
        except Exception as err:
            log.exception("deployment of %s failed", dep.model)
            dep.fail("deploy_failed", f"{type(err).__name__}: {err}")
        finally:
            self._count()

    def _base_ref(self, manifest: Manifest) -> str:
        """The base model as an engine loads it: a directory under the models root, or a hub id."""
        local = local_model_dir(self.settings.paths.resolved_models_root(), manifest.base_model)
        return str(local) if local is not None else manifest.base_model

    async def _merge(self, tenant: str, manifest: Manifest, why: str | None) -> Manifest:
        """Merged weights are needed: have a worker merge the adapter, then wait for the manifest (or its failure)."""
        log.info("merging %s: %s", manifest.name, why or "the engine cannot load adapters")
        store = tenant_store(self.store, tenant)
        await run_in_threadpool(clear_merge_failure, store, manifest.name)
        await run_in_threadpool(self.enqueue_merge, tenant, manifest.name)
        deadline = time.monotonic() + self.settings.serving.merge_timeout_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            current = await self.resolve(tenant, manifest.name)
            if "merged" in current.parts:
                return current
            failure = await run_in_threadpool(merge_failure, store, manifest.name)
            if failure:
                worker, error = failure.get("worker", "?"), failure.get("error", "unknown error")
                message = f"merging {manifest.name} failed on worker {worker}: {error}"
                raise MergeFailedError(message, code=failure.get("code") or "merge_failed")
        raise TimeoutError(f"merging {manifest.name} did not finish within "
                           f"{self.settings.serving.merge_timeout_seconds:.0f} s; is a worker running?")  # fmt: skip

    # -- servers ---------------------------------------------------------------------------------------------

    async def _server(self, engine: Engine, artifact: artifacts.Artifact, base_ref: str, plan: Plan) -> Server:
        key = engine.server_key(artifact, base_ref, plan)
        async with self._server_locks[key]:
            server = await self.live_server(key)
            if server is not None and plan.lora_rank is not None and plan.lora_rank > (server.plan.lora_rank or 0):
                return await self._restart_for_rank(server, engine, artifact, base_ref, plan)
            return server or await self._start_server(engine, artifact, base_ref, plan, key)

    async def _start_server(self, engine: Engine, artifact: artifacts.Artifact, base_ref: str, plan: Plan,
                            key: str) -> Server:  # fmt: skip
        spec = engine.spec(artifact, base_ref, self.launcher.path_for_server, plan)
        return await self.run_server(spec, key, engine.name, plan, engine.hot_loads and plan.mode == "adapter")

    async def run_server(self, spec: ServerSpec, key: str, engine: str, plan: Plan, hot_loads: bool) -> Server:
        """Start ``spec`` as the server behind ``key`` and wait until it is healthy (stopping it if it is not)."""
        handle = await self.launch(spec)
        server = Server(key=key, engine=engine, handle=handle, plan=plan, hot_loads=hot_loads)
        self.servers[key] = server
        try:
            await self._wait_healthy(server, spec.health_path)
        except BaseException:
            await self.stop_server(server, "failed to start")
            raise
        server.state, server.ready_at = "ready", time.time()
        self.metrics.servers.labels(engine=engine).inc()
        return server

    async def launch(self, spec: ServerSpec) -> ServerHandle:
        """Start a model server from the owner thread, whichever thread or event loop asks."""
        return await self.owner.call(self.launcher.start, spec)

    def server_lock(self, key: str) -> asyncio.Lock:
        """Held while the server behind ``key`` is looked up, started or replaced."""
        return self._server_locks[key]

    async def server_alive(self, server: Server) -> bool:
        return bool(await self.owner.call(self.launcher.alive, server.handle))

    async def live_server(self, key: str) -> Server | None:
        """The ready, running server behind ``key`` (call with its lock held); a dead or failed one is dropped."""
        server = self.servers.get(key)
        if server is not None and server.state == "ready" and await self.server_alive(server):
            return server
        if server is not None:
            await self.stop_server(server, "replaced")
        return None

    async def embedding_server(self, name: str) -> Server:
        """The running pooling server of embedding model ``name`` (started on first use, stopped when idle)."""
        return await embeddings.server_for(self, name)

    async def _restart_for_rank(self, old: Server, engine: Engine, artifact: artifacts.Artifact, base_ref: str,
                                plan: Plan) -> Server:  # fmt: skip
        """A hot-loaded adapter of a larger rank than the base server's slot: restart that server with the larger
        slot (one server per base model stays the rule) and load every adapter it held again."""
        rank = max(plan.lora_rank or 0, old.plan.lora_rank or 0)
        log.info("restarting %s: an adapter of rank %s needs --max-lora-rank %d (was %s)", old.handle.name,
                 plan.adapter_rank, rank, old.plan.lora_rank)  # fmt: skip
        held, bases_held = dict(old.attached), {k: m for k, m in old.models.items() if k not in old.attached}
        moving = [d for d in self.deployments.values() if d.server_key == old.key and d.state == "ready"]
        for dep in moving:
            dep.state = "deploying"
        await self.stop_server(old, f"restarting for LoRA rank {rank}")
        try:
            server = await self._start_server(engine, artifact, base_ref, plan.with_rank(rank), old.key)
            async with server.lock:
                for key, held_artifact in held.items():
                    path = self.launcher.path_for_server(held_artifact.path)
                    server.models[key] = await engine.attach(self.client, server.handle, held_artifact, path, plan)
                    server.attached[key] = held_artifact
                server.models.update(bases_held)  # a base model asked for by name: served by the new server too
        except BaseException:
            for dep in moving:
                dep.state = "stopped"  # the next request deploys them again
            raise
        for dep in moving:
            if dep.state == "deploying":
                dep.state = "ready"
        return server

    async def _wait_healthy(self, server: Server, path: str) -> None:
        timeout = self.settings.serving.start_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            if not await self.server_alive(server):
                why = await self.owner.call(self.launcher.describe_failure, server.handle)
                raise EngineStartError(f"{server.handle.name} died while starting: {why}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get(server.handle.url + path, timeout=5)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                why = await self.owner.call(self.launcher.describe_failure, server.handle)
                raise EngineStartError(f"{server.handle.name} was not healthy within {timeout:.0f} s: {why}")
            await asyncio.sleep(0.5)

    # -- requests --------------------------------------------------------------------------------------------

    async def for_request(self, tenant: str, name: str, wait: bool) -> tuple[Deployment, Server]:
        """The ready deployment serving ``name``, deploying it first when allowed (and waiting when asked to)."""
        dep = self.find(tenant, name)
        if dep is None or dep.state in ("stopped", "failed"):
            if not self.settings.serving.auto_deploy:
                raise ApiError(409, f"The model '{name}' is not deployed; POST /v1/deployments first.", param="model",
                               code="model_not_deployed")  # fmt: skip
            dep = await self.deploy(tenant, name)
        if dep.state == "deploying" and wait:
            await self.wait(dep, self.settings.serving.request_wait_seconds)
        if dep.state == "failed":
            raise dep.failure()
        server = self.servers.get(dep.server_key or "")
        if dep.state != "ready" or server is None:
            raise ApiError(503, f"The model '{name}' is starting (deployment {dep.state}); retry shortly.",
                           param="model", code="model_loading", headers={"Retry-After": "5"})  # fmt: skip
        server.last_used = time.monotonic()
        return dep, server

    def touch(self, dep: Deployment) -> None:
        server = self.servers.get(dep.server_key or "")
        if server is not None:
            server.last_used = time.monotonic()

    # -- teardown --------------------------------------------------------------------------------------------

    async def undeploy(self, tenant: str, name: str) -> Deployment:
        dep = self.find(tenant, name)
        if dep is None:
            raise ApiError(404, f"No deployment of '{name}'.", param="model", code="deployment_not_found")
        await self._detach(dep)
        self.deployments.pop((tenant, dep.model), None)
        dep.state = "stopped"
        self._count()
        return dep

    async def _detach(self, dep: Deployment) -> None:
        if dep.task is not None and not dep.task.done():
            dep.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await dep.task
        server = self.servers.get(dep.server_key or "")
        if server is None:
            return
        engine = make_engine(server.engine, self.settings)
        async with server.lock:
            engine_model = server.models.pop((dep.tenant, dep.model), None)
            attached = server.attached.pop((dep.tenant, dep.model), None)  # None for a base: nothing to unload
            if engine_model and attached and server.hot_loads and server.models and server.state == "ready":
                try:
                    await engine.detach(self.client, server.handle, engine_model)
                    self.metrics.adapter_unloads.inc()
                except Exception as err:  # the adapter stays loaded but unreachable; nothing routes to it
                    log.warning("unloading %s from %s failed: %s", engine_model, server.handle.name, err)
        if not server.models:
            await self.stop_server(server, "no models left")

    async def stop_server(self, server: Server, why: str) -> None:
        if self.servers.get(server.key) is server:
            del self.servers[server.key]
        if server.state == "ready":
            self.metrics.servers.labels(engine=server.engine).dec()
        server.state = "stopped"
        log.info("stopping %s (%s)", server.handle.name, why)
        await self.owner.call(self.launcher.stop, server.handle)
        for dep in self.deployments.values():
            if dep.server_key == server.key and dep.state == "ready":
                dep.state = "stopped"
        self._count()

    async def reap(self) -> None:
        """Stop servers idle past the timeout, and forget servers that died (their models restart on demand)."""
        idle = self.settings.serving.idle_timeout_seconds
        for server in list(self.servers.values()):
            if server.state != "ready":
                continue
            if time.monotonic() - server.last_used > idle:
                await self.stop_server(server, f"idle for more than {idle:.0f} s")
            elif not await self.server_alive(server):
                await self.stop_server(server, "it exited")

    def _count(self) -> None:
        self.metrics.deployments.clear()
        for dep in self.deployments.values():
            self.metrics.deployments.labels(state=dep.state, engine=dep.engine).inc()

    async def cleanup_orphans(self) -> int:
        return await self.owner.call(self.launcher.cleanup_orphans)

    async def close(self) -> None:
        for dep in self.deployments.values():
            if dep.task is not None and not dep.task.done():
                dep.task.cancel()
        for server in list(self.servers.values()):
            await self.stop_server(server, "serving is shutting down")
        await self.owner.call(self.launcher.close)
        self.owner.close()
        await self.client.aclose()


class MergeFailedError(RuntimeError):
    """The worker's merge of an adapter failed; its reason and code (``checksum_mismatch`` when the adapter's bytes
    were not the published ones, as serving's own check calls it) reach the deployment at once."""

    def __init__(self, message: str, code: str = "merge_failed") -> None:
        super().__init__(message)
        self.code = code
