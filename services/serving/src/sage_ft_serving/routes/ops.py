"""Health, readiness and Prometheus metrics (serving's own, plus each vLLM server's, labelled by server)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest

from sage_ft_serving.deps import Manager, State

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        503: {
            "description": "The object store is unreachable",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    },
)
async def readyz(manager: Manager) -> Response:
    try:
        await manager.check_store()
    except Exception as err:
        return PlainTextResponse(f"object store: {type(err).__name__}", status_code=503)
    return PlainTextResponse("ok")


@router.get(
    "/metrics",
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
async def prometheus(state: State) -> Response:
    await state.refresh_engine_metrics()
    return Response(generate_latest(state.metrics.registry), media_type="text/plain; version=0.0.4")
