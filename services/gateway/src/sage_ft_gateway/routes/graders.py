"""``/v1/fine_tuning/alpha/graders``: OpenAI's grader endpoints (``run``, ``validate``)."""

from __future__ import annotations

from fastapi import APIRouter

from sage_ft.api_errors import error_responses
from sage_ft_gateway.deps import Svc, Tenant
from sage_ft_gateway.protocol.graders import (
    GraderRunRequest,
    GraderRunResponse,
    GraderValidateRequest,
    GraderValidateResponse,
)

router = APIRouter(
    prefix="/v1/fine_tuning/alpha/graders", tags=["graders"], responses=error_responses(400, 401, 404, 422)
)


@router.post("/run", response_model=GraderRunResponse)
def run_grader(body: GraderRunRequest, tenant: Tenant, svc: Svc) -> GraderRunResponse:
    """The grader's reward for ``model_sample`` on ``item``. What the sample or the grader's code did wrong is in
    ``metadata.errors`` (reward 0), never an HTTP error."""
    return svc.graders.run(tenant, body)


@router.post("/validate", response_model=GraderValidateResponse)
def validate_grader(body: GraderValidateRequest, tenant: Tenant, svc: Svc) -> GraderValidateResponse:
    return svc.graders.validate(tenant, body.grader)
