"""``create_app``: the serving service. The manager is built in the lifespan, and closing it stops every server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from sage_ft import api_errors
from sage_ft.api_errors import ApiError
from sage_ft.storage import make_store
from sage_ft.storage.scoped import LOCAL_TENANT
from sage_ft_serving import proxy
from sage_ft_serving.launchers import make_launcher
from sage_ft_serving.manager import DeploymentManager
from sage_ft_serving.metrics import EngineMetricsCollector, ServingMetrics
from sage_ft_serving.settings import Settings

log = logging.getLogger(__name__)
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


Tenant = Annotated[str | None, Header()]  # set by the gateway after it authenticated the caller
NoWait = Annotated[str | None, Header()]  # X-Sage-No-Wait: answer 503 + Retry-After instead of waiting for a deploy


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str
    engine: str | None = None
    wait: bool = False


def _merge_sender(settings: Settings) -> Any:
    """Send the worker's merge task by name (serving never imports the worker)."""
    from celery import Celery

    from sage_ft.jobs.broker import MERGE_TASK, celery_conf

    celery = Celery("sage_ft_serving")
    celery.conf.update(celery_conf(settings.jobs))

    def enqueue(tenant: str, model: str) -> None:
        celery.send_task(MERGE_TASK, args=[tenant, model], queue=settings.jobs.merge_queue)

    return enqueue


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServingMetrics()
    manager = DeploymentManager(settings, make_store(settings.storage), make_launcher(settings), metrics,
                                _merge_sender(settings))  # fmt: skip
    scrapes: dict[str, str] = {}
    metrics.add_collector(EngineMetricsCollector(lambda: scrapes))

    async def reaper() -> None:
        while True:
            await asyncio.sleep(settings.serving.reap_interval_seconds)
            try:
                await manager.reap()
            except Exception:
                log.exception("idle reaper pass failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        removed = await run_in_threadpool(manager.launcher.cleanup_orphans)
        if removed:
            log.info("removed %d model servers left by an earlier run", removed)
        task = asyncio.create_task(reaper())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await manager.close()

    app = FastAPI(title="sage-ft serving", version="0.1.0", lifespan=lifespan)
    app.state.manager = manager
    api_errors.install(app)

    def tenant_of(x_sage_tenant: str | None) -> str:
        tenant = x_sage_tenant or LOCAL_TENANT
        if not _TENANT.match(tenant):
            raise ApiError(400, "X-Sage-Tenant: invalid tenant name", param="X-Sage-Tenant", code="invalid_tenant")
        return tenant

    @app.post("/v1/deployments")
    async def deploy(req: Annotated[DeployRequest, Body()], x_sage_tenant: Tenant = None) -> dict[str, Any]:
        tenant = tenant_of(x_sage_tenant)
        dep = await manager.deploy(tenant, req.model, req.engine)
        if req.wait:
            await manager.wait(dep, settings.serving.start_timeout_seconds)
        return manager.describe(dep)

    @app.get("/v1/deployments")
    async def list_deployments(x_sage_tenant: Tenant = None) -> dict[str, Any]:
        return {"object": "list", "data": manager.listing(tenant_of(x_sage_tenant))}

    @app.get("/v1/deployments/{model:path}")
    async def get_deployment(model: str, x_sage_tenant: Tenant = None) -> dict[str, Any]:
        dep = manager.find(tenant_of(x_sage_tenant), model)
        if dep is None:
            raise ApiError(404, f"No deployment of '{model}'.", param="model", code="deployment_not_found")
        return manager.describe(dep)

    @app.delete("/v1/deployments/{model:path}")
    async def delete_deployment(model: str, x_sage_tenant: Tenant = None) -> dict[str, Any]:
        dep = await manager.undeploy(tenant_of(x_sage_tenant), model)
        return {"object": "deployment.deleted", "id": dep.model, "deleted": True}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, x_sage_tenant: Tenant = None, x_sage_no_wait: NoWait = None) -> Response:
        return await proxy.forward(manager, request, "/v1/chat/completions", tenant_of(x_sage_tenant),
                                   wait=not x_sage_no_wait)  # fmt: skip

    @app.post("/v1/completions")
    async def completions(request: Request, x_sage_tenant: Tenant = None, x_sage_no_wait: NoWait = None) -> Response:
        return await proxy.forward(manager, request, "/v1/completions", tenant_of(x_sage_tenant),
                                   wait=not x_sage_no_wait)  # fmt: skip

    @app.get("/v1/models")
    async def models(x_sage_tenant: Tenant = None) -> dict[str, Any]:
        ready = [d for d in manager.listing(tenant_of(x_sage_tenant)) if d["state"] == "ready"]
        return {"object": "list", "data": [{"id": d["id"], "object": "model", "owned_by": "sage-ft",
                                            "created": d["created_at"]} for d in ready]}  # fmt: skip

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await run_in_threadpool(manager.store.exists, "healthz-probe")
        except Exception as err:
            return PlainTextResponse(f"object store: {type(err).__name__}", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def prometheus() -> Response:
        scrapes.clear()
        scrapes.update(await manager.scrape())
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    return app
