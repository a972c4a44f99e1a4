"""The eval object of OpenAI's Evals API: a request model that validates it, and the record the job store keeps.

An eval names its item schema (``data_source_config.type = "custom"``) and its graders (``testing_criteria``). Runs
(a model answering the items, then grading) refer to it by id. The record is tenant-scoped like jobs and files.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sage_ft.errors import UNION_TAG, ConfigError
from sage_ft.evals.graders import parse_criteria
from sage_ft.evals.items import check_item_schema
from sage_ft.jobs.model import now
from sage_ft.jobs.spec import METADATA_SCHEMA, check_metadata

# the sample namespace a run fills in: the text (and its JSON, when it parses) the model answered
SAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"model": {"type": "string"}, "output_text": {"type": "string"}, "output_json": {"type": "object"}},
    "required": ["model", "output_text"],
}


class CustomDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
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
    testing_criteria: list[dict[str, Any]] = Field(min_length=1, max_length=32)


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

    def to_openai(self) -> dict[str, Any]:
        properties: dict[str, Any] = {"item": self.item_schema}
        if self.include_sample_schema:
            properties["sample"] = SAMPLE_SCHEMA
        schema = {"type": "object", "properties": properties, "required": sorted(properties)}
        return {
            "object": "eval",
            "id": self.id,
            "name": self.name,
            "created_at": int(self.created_at),
            "metadata": self.metadata or {},
            "data_source_config": {"type": "custom", "schema": schema},
            "testing_criteria": self.testing_criteria,
        }


def parse_eval(body: Any) -> EvalCreate:
    """Validate a create request; every error is a ConfigError naming the parameter."""
    try:
        request = EvalCreate.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not UNION_TAG.match(str(p))) or "body"
        msg = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        if param == "data_source_config.type":
            msg = "unsupported data source; supported: custom (an item_schema)"
        raise ConfigError(f"{param}: {msg}", param=param) from None
    properties = check_item_schema(request.data_source_config.item_schema)
    criteria = parse_criteria(request.testing_criteria, properties)
    request.testing_criteria = [c.model_dump() for c in criteria]  # with defaults (pass_threshold) filled in
    return request


def parse_update(body: Any) -> EvalUpdate:
    try:
        update = EvalUpdate.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or "body"
        msg = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{param}: {msg}", param=param) from None
    return update
