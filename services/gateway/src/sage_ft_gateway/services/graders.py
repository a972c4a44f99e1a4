"""Graders on demand: check one, or run one on a sample. Model graders ask serving as the caller's tenant, for a
model it may use (a 404 with the closest names otherwise); python graders run in the sandbox the settings name
(bubblewrap on this host, or serving's)."""

from __future__ import annotations

from sage_ft.errors import ConfigError
from sage_ft.graders import (
    AnyGrader,
    Grading,
    MultiGrader,
    PythonGrader,
    check_templates,
    model_names,
    python_sandbox,
    sample_of,
)
from sage_ft.graders.serving import ServingModels
from sage_ft_gateway.errors import ApiError
from sage_ft_gateway.protocol.graders import GraderRunRequest, GraderRunResponse, GraderValidateResponse
from sage_ft_gateway.services.models import ModelService
from sage_ft_gateway.state import GatewayState


class GraderService:
    def __init__(self, state: GatewayState, models: ModelService) -> None:
        self.state = state
        self.models = models
        self.sandbox = python_sandbox(state.settings.graders, state.settings.gateway.serving_url)

    def validate(self, tenant: str, grader: AnyGrader) -> GraderValidateResponse:
        self.check(tenant, grader)
        return GraderValidateResponse(grader=grader.model_dump(mode="json", exclude_none=True))

    def run(self, tenant: str, request: GraderRunRequest) -> GraderRunResponse:
        grader = request.grader
        names = self.check(tenant, grader)
        settings = self.state.settings
        models = ServingModels(settings.gateway.serving_url, tenant, settings.graders.model_timeout_seconds, names)
        try:
            result = Grading(models, self.sandbox).run(grader, sample_of(request.model_sample), request.item)
        finally:
            models.close()
        return GraderRunResponse.from_result(result)

    def check(self, tenant: str, grader: AnyGrader, param: str = "grader") -> dict[str, str]:
        """Templates name known variables, a python grader's image is allowed, and every model a grader asks is
        one this tenant may use; returns the name serving knows each model by. ``param``: where the grader sits
        in the request."""
        try:
            check_templates(grader, param, None)
        except ConfigError as err:
            raise ApiError(400, str(err), param=err.param) from None
        for where, sub in _pythons(grader, param):
            if not self.sandbox.image_allowed(sub.image_tag):
                allowed = ", ".join(self.state.settings.graders.python_image_tags)
                raise ApiError(
                    400,
                    f"{where}.image_tag: {sub.image_tag!r} is not an allowed sandbox image; allowed: {allowed}",
                    param=f"{where}.image_tag",
                )
        return {m: self.models.check_evaluable(tenant, m, f"{param}.model") for m in model_names(grader)}


def _pythons(grader: AnyGrader, where: str) -> list[tuple[str, PythonGrader]]:
    if isinstance(grader, PythonGrader):
        return [(where, grader)]
    if isinstance(grader, MultiGrader):
        return [p for name, sub in grader.graders.items() for p in _pythons(sub, f"{where}.graders.{name}")]
    return []
