"""``create_app``: the serving service. Its state is built in the lifespan, and closing it stops every server.
``create_grader_app``: only its python-grader sandbox, for a locked-down deployment of its own (Helm's graders)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from sage_ft import api_errors
from sage_ft_serving.launchers import Launcher
from sage_ft_serving.routes import deployments, graders, inference, ops
from sage_ft_serving.sandbox import GraderHost
from sage_ft_serving.settings import Settings
from sage_ft_serving.state import ServingState


def create_app(
    settings: Settings | None = None,
    *,
    launcher: Launcher | None = None,
    enqueue_merge: Callable[[str, str], None] | None = None,
) -> FastAPI:
    """The app; ``launcher`` and ``enqueue_merge`` replace the configured ones (in-process tests)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServingState(settings, launcher, enqueue_merge)
        app.state.serving = state
        app.state.graders = state.graders
        await state.start()
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(title="sage-ft serving", version="0.1.0", lifespan=lifespan)
    api_errors.install(app)
    for module in (deployments, graders, inference, ops):
        app.include_router(module.router)
    return app


def create_grader_app(settings: Settings | None = None) -> FastAPI:
    """``POST /v1/graders/python`` with its probes and nothing else: no store, no launcher, no model server, so the
    pod it runs in needs no secret, no service account and no network but its own port."""
    app = FastAPI(title="sage-ft graders", version="0.1.0")
    api_errors.install(app)
    app.state.graders = GraderHost(settings or Settings())
    app.include_router(graders.router)
    app.include_router(graders.probes)
    return app
