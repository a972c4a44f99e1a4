"""The eval object of OpenAI's Evals API: a request model that validates it, and the record the job store keeps.

An eval names its item schema (``data_source_config.type = "custom"``) and its graders (``testing_criteria``). Runs
(a model answering the items, then grading) refer to it by id. The record is tenant-scoped like jobs and files.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sage_ft.errors import ConfigError, request_error
from sage_ft.evals.graders import check_criteria
from sage_ft.evals.items import check_item_schema
from sage_ft.graders.model import METRICS, Grader
from sage_ft.jobs.model import now
from sage_ft.jobs.spec import METADATA_SCHEMA, check_metadata
from sage_ft.protocol.common import TAGGED_UNIONS

# the sample namespace a run fills in: the text (and its JSON, when it parses) the model answered
SAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"model": {"type": "string"}, "output_text": {"type": "string"}, "output_json": {"type": "object"}},
    "required": ["model", "output_text"],
}


class CustomDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # 0 is not false here, as the schema says
    type: Literal["custom"]
    item_schema: dict[str, Any]
    include_sample_schema: bool = True


class EvalUpdate(BaseModel):
    """``POST /v1/evals/{id}``: what can change after creation."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = Field(default=None, json_schema_extra=METADATA_SCHEMA)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(v)


class EvalCreate(EvalUpdate):
    """``POST /v1/evals``. Unknown fields are rejected by name; graders are checked by ``parse_criteria``."""

    data_source_config: CustomDataSource
    testing_criteria: list[Grader] = Field(min_length=1, max_length=32)


class EvalRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    tenant: str
    name: str
    created_at: float = Field(default_factory=now)
    item_schema: dict[str, Any]
    include_sample_schema: bool = True
    testing_criteria: list[dict[str, Any]]
    metadata: dict[str, str] | None = None


def parse_eval(body: Any) -> EvalCreate:
    """Validate a create request; every error is a ConfigError naming the parameter."""
    try:
        request = EvalCreate.model_validate(body)
    except ValidationError as err:
        param, msg = request_error(err.errors()[0], TAGGED_UNIONS)
        param = param or "body"
        if param.endswith("evaluation_metric"):
            msg = f"unsupported metric; supported: {', '.join(METRICS)}"
        if param == "data_source_config.type":
            msg = "unsupported data source; supported: custom (an item_schema)"
        raise ConfigError(f"{param}: {msg}", param=param) from None
    properties = check_item_schema(request.data_source_config.item_schema)
    check_criteria(request.testing_criteria, properties)
    return request


def parse_update(body: Any) -> EvalUpdate:
    try:
        update = EvalUpdate.model_validate(body)
    except ValidationError as err:
        param, msg = request_error(err.errors()[0], {})
        param = param or "body"
        raise ConfigError(f"{param}: {msg}", param=param) from None
    return update
