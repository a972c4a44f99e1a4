"""``/v1/graders/python``: a python grader call in serving's sandbox, for the gateway and workers (internal); and the
graders-only service's probes (``create_grader_app``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from sage_ft.api_errors import ApiError, error_responses
from sage_ft.protocol.serving import PythonGraderAnswer, PythonGraderCall
from sage_ft_serving.deps import Graders

router = APIRouter(tags=["graders"], responses=error_responses(400))
probes = APIRouter(tags=["ops"])


@router.post("/v1/graders/python", response_model=PythonGraderAnswer)
def run_python(call: PythonGraderCall, host: Graders) -> PythonGraderAnswer:
    """Blocking (a container's or process's whole life), so FastAPI runs it on its thread pool."""
    sandbox = host.sandbox
    if not sandbox.image_allowed(call.image_tag):
        allowed = ", ".join(host.settings.graders.python_image_tags)
        raise ApiError(
            400, f"image_tag {call.image_tag!r} is not an allowed sandbox image; allowed: {allowed}", param="image_tag"
        )
    done = sandbox.run(call.source, call.sample, call.item, call.image_tag)
    return PythonGraderAnswer(score=done.score, seconds=done.seconds, error=done.error, details=done.details)


@probes.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get(
    "/readyz",
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        503: {"description": "No sandbox can run here", "content": {"text/plain": {"schema": {"type": "string"}}}},
    },
)
def readyz(host: Graders) -> Response:
    """Ready once a grader is known to run confined here (the first check runs one, off the event loop)."""
    why = host.unavailable()
    return PlainTextResponse(f"sandbox: {why}", status_code=503) if why else PlainTextResponse("ok")
