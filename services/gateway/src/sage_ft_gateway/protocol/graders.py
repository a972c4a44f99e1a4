"""``/v1/fine_tuning/alpha/graders``: run a grader on one sample, or check one, in OpenAI's request and response
shapes (``client.fine_tuning.alpha.graders.run`` / ``.validate``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sage_ft.graders import Grader, GraderResult
from sage_ft_gateway.protocol.params import ApiModel


class GraderRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader
    model_sample: str = Field(max_length=1_000_000, description="The model's answer: the sample namespace.")
    item: Any = Field(default=None, description="The dataset row: the item namespace.")


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader


class GraderRunMetadata(ApiModel):
    name: str
    type: str
    errors: dict[str, Any]
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None = None
    sampled_model_name: str | None = None
    error_details: list[str] = []  # ours: each error in a sentence


class GraderRunResponse(ApiModel):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]

    @classmethod
    def from_result(cls, result: GraderResult) -> GraderRunResponse:
        scores = dict(result.sub_rewards) or ({result.name: result.reward} if not result.errors.any else {})
        return cls(
            reward=result.reward,
            metadata=GraderRunMetadata(
                name=result.name,
                type=result.type,
                errors=result.errors.to_api(),
                execution_time=result.execution_time,
                scores=scores,
                token_usage=sum(result.token_usage.values()) if result.token_usage else None,
                sampled_model_name=result.sampled_model_name,
                error_details=result.errors.details,
            ),
            sub_rewards=dict(result.sub_rewards),
            model_grader_token_usage_per_model=dict(result.token_usage),
        )


class GraderValidateResponse(ApiModel):
    grader: dict[str, Any]
