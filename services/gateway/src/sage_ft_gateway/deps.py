"""Request dependencies: the caller's tenant and the service objects kept on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from sage_ft_gateway.services.estimate import EstimateService
from sage_ft_gateway.services.eval_runs import EvalRunService
from sage_ft_gateway.services.evals import EvalService
from sage_ft_gateway.services.files import FileService
from sage_ft_gateway.services.graders import GraderService
from sage_ft_gateway.services.inference import InferenceService
from sage_ft_gateway.services.jobs import JobService
from sage_ft_gateway.services.models import ModelService
from sage_ft_gateway.services.webhooks import WebhookService
from sage_ft_gateway.state import GatewayState


class Services:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.files = FileService(state)
        self.models = ModelService(state)
        self.graders = GraderService(state, self.models)
        self.jobs = JobService(state, self.files, self.models, self.graders)
        self.inference = InferenceService(state, self.models)
        self.estimates = EstimateService(state, self.jobs)
        self.evals = EvalService(state)
        self.eval_runs = EvalRunService(state, self.evals, self.files, self.models)
        self.webhooks = WebhookService(state)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    return services(request).state.auth.tenant(authorization)


Tenant = Annotated[str, Depends(tenant)]
Svc = Annotated[Services, Depends(services)]
