"""Operations: liveness, readiness (Redis and the object store reachable) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sage_ft_gateway.deps import Svc

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis or the object store is unreachable"}})
def readyz(svc: Svc) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        checks["redis"] = "ok" if svc.state.jobs.ping() else "unreachable"
    except Exception as err:
        checks["redis"] = f"unreachable: {type(err).__name__}"
    try:
        svc.state.store.stat("readyz-probe")
        checks["object_store"] = "ok"
    except Exception as err:
        checks["object_store"] = f"unreachable: {type(err).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", response_class=Response, responses={200: {"description": "Prometheus text format",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})  # fmt: skip
def metrics(svc: Svc) -> Response:
    return Response(generate_latest(svc.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
