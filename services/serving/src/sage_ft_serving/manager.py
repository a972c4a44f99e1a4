"""Deployments: which published model is servable for which tenant, and where its requests go.

A deployment is one published model made servable for one tenant: a plan checked before anything starts, its part
fetched and verified, a server for it from the pool, and its model attached there. The manager keeps this
bookkeeping only. What runs the model is the pool's (``pool.py``); how each kind of model gets there is a policy's:
``finetunes`` (adapters and merged weights), ``bases`` (base models by name) and ``embeddings``. A deployment whose
server stopped (idle, dead, or no longer serving it) reads as ``stopped``, and the next request brings it back.

    routes -> manager -> finetunes | bases | embeddings -> pool -> launcher
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from sage_ft.api_errors import ApiError
from sage_ft.models import installed_models, local_model_dir
from sage_ft.protocol.serving import DeploymentObject
from sage_ft.storage import IntegrityError, ObjectStore
from sage_ft.storage.manifest import Manifest
from sage_ft.storage.names import not_found_message
from sage_ft.storage.scoped import tenant_store
from sage_ft_serving import artifacts, bases, embeddings, finetunes
from sage_ft_serving.artifacts import ArtifactError
from sage_ft_serving.engines import ENGINES, Engine, choose_engine, make_engine, servers_get_gpus
from sage_ft_serving.finetunes import MergeFailedError
from sage_ft_serving.metrics import ServingMetrics
from sage_ft_serving.plan import Limits, NotServableError, Plan, make_plan
from sage_ft_serving.pool import ServerPool
from sage_ft_serving.records import Deployment, Endpoint, EngineStartError, Key, Server
from sage_ft_serving.settings import Settings

log = logging.getLogger(__name__)


class DeploymentManager:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        pool: ServerPool,
        metrics: ServingMetrics,
        enqueue_merge: Callable[[str, str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.metrics = metrics
        self.enqueue_merge = enqueue_merge
        self.deployments: dict[Key, Deployment] = {}

    # -- lookups -------------------------------------------------------------------------------------------------

    async def resolve(self, tenant: str, name: str) -> Manifest:
        store = tenant_store(self.store, tenant)
        manifest = await run_in_threadpool(artifacts.resolve, store, name)
        if manifest is None:  # an installed base model, asked for by its own name
            manifest = bases.base_manifest(self.settings.paths.resolved_models_root(), name)
        if manifest is None:
            installed = installed_models(self.settings.paths.resolved_models_root())
            message = await run_in_threadpool(not_found_message, store, name, installed)
            raise ApiError(404, message, param="model", code="model_not_found")
        return manifest

    def find(self, tenant: str, name: str) -> Deployment | None:
        """A deployment by model name or alias (newest first for aliases)."""
        if (tenant, name) in self.deployments:
            return self._settled(self.deployments[(tenant, name)])
        aliased = [d for (t, _), d in self.deployments.items() if t == tenant and d.alias == name]
        return self._settled(max(aliased, key=lambda d: d.created_at)) if aliased else None

    def listing(self, tenant: str) -> list[DeploymentObject]:
        deps = sorted((d for (t, _), d in self.deployments.items() if t == tenant), key=lambda d: d.created_at)
        return [self.describe(d) for d in deps]

    def describe(self, dep: Deployment) -> DeploymentObject:
        self._settled(dep)
        return dep.to_api(self.pool.get(dep.server_key), restarting=self.pool.restarting(dep.server_key))

    def _settled(self, dep: Deployment) -> Deployment:
        """``dep`` with its state as its server has it now: a ready deployment whose server stopped, or no longer
        serves it, is stopped (a server restarting for a larger LoRA slot is bringing it back)."""
        if dep.state == "ready" and not self.pool.restarting(dep.server_key):
            server = self.pool.get(dep.server_key)
            if server is None or server.state != "ready" or (dep.tenant, dep.model) not in server.models:
                dep.state = "stopped"
        return dep

    async def check_store(self) -> None:
        """Raises when the object store does not answer (readiness)."""
        await run_in_threadpool(self.store.exists, "healthz-probe")

    # -- planning ------------------------------------------------------------------------------------------------

    def limits(self) -> Limits:
        cfg = self.settings.serving
        return Limits(
            max_model_len=cfg.max_model_len,
            max_lora_rank=cfg.max_lora_rank,
            gpu=servers_get_gpus(self.settings),
            kv_cache_gb=cfg.vllm_cpu_kv_cache_gb,
            gpu_memory_gb=cfg.gpu_memory_gb,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
        )

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
            message = f"'{manifest.name}' cannot be served by {engine.name}: {err}"
            raise ApiError(422, message, param="model", code=err.code) from None
        except IntegrityError as err:
            message = f"refused to serve {manifest.name}: {err}"
            raise ApiError(422, message, param="model", code="checksum_mismatch") from None
        except ArtifactError as err:
            message = f"refused to serve {manifest.name}: {err}"
            raise ApiError(422, message, param="model", code="unsafe_artifact") from None

    # -- deploy --------------------------------------------------------------------------------------------------

    async def deploy(self, tenant: str, name: str, engine: str | None = None) -> Deployment:
        """Start (or keep) a deployment of ``name``; returns at once, with the work going on in a task."""
        if engine is not None and engine not in (*ENGINES, "auto"):
            message = f"engine: unknown engine '{engine}'; choose one of {', '.join(ENGINES)} or auto"
            raise ApiError(400, message, param="engine", code="invalid_engine")
        engine_name = choose_engine(self.settings, engine)
        manifest = await self.resolve(tenant, name)
        key = (tenant, manifest.name)
        current = self.deployments.get(key)
        eng = make_engine(engine_name, self.settings)
        plan = await self.plan(tenant, manifest, eng)
        fresh = plan.part not in manifest.parts or (
            current is not None and current.digest == artifacts.part_digest(manifest, plan.part)
        )
        kept = current is not None and self._settled(current).state in ("deploying", "ready")
        if current is not None and kept and current.engine == engine_name and fresh:
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
        key = (dep.tenant, dep.model)
        try:
            server = await self._place(dep, manifest, engine, key)
            dep.engine_model = server.models[key]
            dep.server_key, dep.state, dep.ready_at = server.key, "ready", time.time()
            dep.cold_start_seconds = round(time.monotonic() - started, 3)
            self.metrics.cold_start.labels(engine=dep.engine).observe(dep.cold_start_seconds)
            log.info(
                "deployed %s on %s in %.1fs (%s)", dep.model, server.handle.name, dep.cold_start_seconds, dep.plan.mode
            )
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

    async def _place(self, dep: Deployment, manifest: Manifest, engine: Engine, key: Key) -> Server:
        """The policy for what ``manifest`` is: a base model by name, or a published fine-tune (merged first when
        the plan needs merged weights the job did not publish)."""
        base_ref = self._base_ref(manifest)
        if bases.is_base(manifest):
            return await bases.place(self.pool, engine, key, Path(base_ref), dep.plan)
        store = tenant_store(self.store, dep.tenant)
        if dep.plan.part == "merged" and "merged" not in manifest.parts:
            timeout = self.settings.serving.merge_timeout_seconds
            manifest = await finetunes.merged(
                store, manifest, dep.plan.reason, lambda: self.enqueue_merge(dep.tenant, manifest.name), timeout
            )
        cache = self.settings.cache_dir
        artifact = await run_in_threadpool(artifacts.fetch, store, manifest, dep.plan.part, cache)
        dep.digest = artifact.digest
        return await finetunes.place(self.pool, engine, key, artifact, base_ref, dep.plan)

    def _base_ref(self, manifest: Manifest) -> str:
        """The base model as an engine loads it: a directory under the models root, or a hub id."""
        local = local_model_dir(self.settings.paths.resolved_models_root(), manifest.base_model)
        return str(local) if local is not None else manifest.base_model

    # -- requests ------------------------------------------------------------------------------------------------

    async def endpoint(self, tenant: str, name: str, wait: bool) -> Endpoint:
        """Where requests for ``name`` go, deploying it first when allowed (and waiting when asked to)."""
        dep = self.find(tenant, name)
        if dep is None or dep.state in ("stopped", "failed"):
            if not self.settings.serving.auto_deploy:
                message = f"The model '{name}' is not deployed; POST /v1/deployments first."
                raise ApiError(409, message, param="model", code="model_not_deployed")
            dep = await self.deploy(tenant, name)
        if dep.state == "deploying" and wait:
            await self.wait(dep, self.settings.serving.request_wait_seconds)
        if dep.state == "failed":
            raise dep.failure()
        server = self.pool.get(dep.server_key)
        if self._settled(dep).state != "ready" or server is None or self.pool.restarting(dep.server_key):
            message = f"The model '{name}' is starting (deployment {dep.state}); retry shortly."
            raise ApiError(503, message, param="model", code="model_loading", headers={"Retry-After": "5"})
        endpoint = Endpoint(url=server.handle.url, model=dep.engine_model or name, engine=dep.engine, server=server)
        endpoint.touch()
        return endpoint

    async def embedding_endpoint(self, name: str) -> Endpoint:
        """Where embedding requests for ``name`` go (a base embedding model every tenant shares)."""
        endpoint = await embeddings.place(self.pool, self.settings, name)
        endpoint.touch()
        return endpoint

    # -- teardown ------------------------------------------------------------------------------------------------

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
        server = self.pool.get(dep.server_key)
        if server is not None:
            await self.pool.detach(server, (dep.tenant, dep.model))
        self._count()

    async def reap(self) -> None:
        """Stop servers idle past the timeout, and forget servers that died (their models restart on demand)."""
        if await self.pool.reap():
            self._count()

    def _count(self) -> None:
        self.metrics.deployments.clear()
        for dep in self.deployments.values():
            self.metrics.deployments.labels(state=self._settled(dep).state, engine=dep.engine).inc()

    async def close(self) -> None:
        """Cancel deploys under way (the pool, closed after this, stops the servers)."""
        for dep in self.deployments.values():
            if dep.task is not None and not dep.task.done():
                dep.task.cancel()
