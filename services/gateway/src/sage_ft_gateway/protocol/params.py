"""Pieces of the gateway's contract that need FastAPI (path parameters); the rest is ``sage_ft.protocol``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Path

from sage_ft.protocol.common import MODEL_ID, SSE_EVENT, ApiModel, Deleted, sse_response

ModelPath = Annotated[str, Path(pattern=MODEL_ID, description="A model's name or alias.")]
IdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="An id: ftjob-..., file-...")]


def cursor_page(data: Sequence[ApiModel | dict[str, Any]], more: bool) -> dict[str, Any]:
    """A list in the Evals API's shape: the page, whether more follow, and the ids at both ends (for ``after``)."""
    rows = [d.model_dump(mode="json") if isinstance(d, ApiModel) else d for d in data]
    return {
        "object": "list",
        "data": rows,
        "has_more": more,
        "first_id": rows[0]["id"] if rows else None,
        "last_id": rows[-1]["id"] if rows else None,
    }


__all__ = ["MODEL_ID", "SSE_EVENT", "ApiModel", "Deleted", "IdPath", "ModelPath", "cursor_page", "sse_response"]
