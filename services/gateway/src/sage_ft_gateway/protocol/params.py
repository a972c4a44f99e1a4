"""Pieces of the gateway's contract that need FastAPI (path parameters); the rest is ``sage_ft.protocol``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from sage_ft.protocol.common import MODEL_ID, SSE_EVENT, ApiModel, Deleted, sse_response

ModelPath = Annotated[str, Path(pattern=MODEL_ID, description="A model's name or alias.")]
IdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="An id: ftjob-..., file-...")]

__all__ = ["MODEL_ID", "SSE_EVENT", "ApiModel", "Deleted", "IdPath", "ModelPath", "sse_response"]
