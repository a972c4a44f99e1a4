"""Operations: liveness, readiness (Redis and the object store reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sage_ft_gateway.deps import Svc

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis or the object store is unreachable (named)"}})
def readyz(svc: Svc) -> JSONResponse:
    """Ready when Redis and the object store answer; each is given a few seconds at most, and answers are cached."""
    checks = svc.state.readiness.check()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        }
    },
)
def metrics(svc: Svc) -> Response:
    return Response(generate_latest(svc.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
