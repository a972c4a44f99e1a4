"""Pieces every feature's contract shares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# Request fields that are unions discriminated on ``type``, and their tags (error paths leave the tags out)
FINE_TUNING_METHODS = ("supervised", "dpo", "reinforcement")
GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "multi")
TAGGED_UNIONS = {
    "method": FINE_TUNING_METHODS,
    "grader": GRADER_TYPES,
    "testing_criteria": GRADER_TYPES,
    "graders": GRADER_TYPES[:-1],  # a multi grader's members
}

# A published model's name or alias (``ft:base:suffix:id``, ``code``), or a hub id as a base model
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$"


class ApiModel(BaseModel):
    """A response object: declared fields are exact, extra fields are allowed (extensions, newer OpenAI fields)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Deleted(ApiModel):
    id: str
    object: str
    deleted: bool


SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def sse_response(description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 that is a server-sent event stream (the schema describes one event)."""
    return {200: {"description": description, "content": {"text/event-stream": {"schema": SSE_EVENT}}}}
