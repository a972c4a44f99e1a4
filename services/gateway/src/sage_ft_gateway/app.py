"""``create_app``: the FastAPI gateway. Everything stateful is built in the lifespan and kept on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from sage_ft_gateway import errors
from sage_ft_gateway.deps import Services
from sage_ft_gateway.metrics import MetricsMiddleware, StateCollector
from sage_ft_gateway.ratelimit import ReadRateLimit, shared_storage
from sage_ft_gateway.routes import (
    console,
    eval_runs,
    evals,
    files,
    graders,
    jobs,
    models,
    ops,
    presets,
    serving,
    webhooks,
)
from sage_ft_gateway.services import deliveries, maintenance
from sage_ft_gateway.settings import Settings
from sage_ft_gateway.state import GatewayState


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = GatewayState(settings)  # connections are lazy: nothing is contacted until a request or the loop
    state.metrics.add_state_collector(StateCollector(state))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(maintenance.loop(state)), asyncio.create_task(deliveries.loop(state))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.aclose()
            state.close()

    app = FastAPI(title="sage-ft gateway", version="0.1.0", lifespan=lifespan)
    app.state.services = Services(state)
    errors.install(app)
    for module in (files, jobs, models, presets, ops, serving, evals, eval_runs, graders, webhooks):
        app.include_router(module.router)
    console.mount(app)
    if settings.gateway.read_rate_limit:
        storage = shared_storage(settings.jobs.redis_url.get_secret_value(), settings.jobs.key_prefix)
        app.add_middleware(ReadRateLimit, limit=settings.gateway.read_rate_limit, storage=storage)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: 429s are counted too
    return app
