"""``/v1/graders/python``: a python grader call in serving's sandbox, for the gateway and workers (internal)."""

from __future__ import annotations

from fastapi import APIRouter

from sage_ft.api_errors import ApiError, error_responses
from sage_ft.protocol.serving import PythonGraderAnswer, PythonGraderCall
from sage_ft_serving.deps import State

router = APIRouter(tags=["graders"], responses=error_responses(400))


@router.post("/v1/graders/python", response_model=PythonGraderAnswer)
def run_python(call: PythonGraderCall, state: State) -> PythonGraderAnswer:
    """Blocking (a container's whole life), so FastAPI runs it on its thread pool."""
    sandbox = state.sandbox
    if not sandbox.image_allowed(call.image_tag):
        allowed = ", ".join(state.settings.graders.python_image_tags)
        raise ApiError(
            400, f"image_tag {call.image_tag!r} is not an allowed sandbox image; allowed: {allowed}", param="image_tag"
        )
    done = sandbox.run(call.source, call.sample, call.item, call.image_tag)
    return PythonGraderAnswer(score=done.score, seconds=done.seconds, error=done.error, details=done.details)
