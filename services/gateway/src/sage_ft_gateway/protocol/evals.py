"""``/v1/evals``: OpenAI's eval objects (a custom data source and deterministic graders)."""

from __future__ import annotations

from typing import Any, Literal

from sage_ft_gateway.protocol.common import ApiModel


class EvalObject(ApiModel):
    object: Literal["eval"]
    id: str
    name: str
    created_at: int
    metadata: dict[str, str]
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]


class EvalList(ApiModel):
    object: Literal["list"]
    data: list[EvalObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class EvalDeleted(ApiModel):
    object: Literal["eval.deleted"]
    deleted: bool
    eval_id: str
