"""``/v1/models``: base models in use and fine-tuned models (with their parts and aliases)."""

from __future__ import annotations

from typing import Any, Literal

from sage_ft_gateway.protocol.params import ApiModel


class ModelObject(ApiModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    aliases: list[str] = []
    parts: list[str] = []
    root: str | None = None
    parent: str | None = None
    job_id: str | None = None
    metrics: dict[str, Any] | None = None


class ModelList(ApiModel):
    object: Literal["list"]
    data: list[ModelObject]


class MergeQueued(ApiModel):
    id: str
    object: Literal["model.merge"]
    status: Literal["queued"]
    merged: bool
