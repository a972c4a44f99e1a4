"""The gateway's error handlers: the shared OpenAI-shaped ones (``sage_ft.api_errors``) plus its own exceptions."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sage_ft import api_errors
from sage_ft.api_errors import ApiError, error_body, error_response, not_found
from sage_ft.errors import DataError
from sage_ft.jobs import JobConflictError

__all__ = ["ApiError", "error_body", "install", "not_found"]
log = logging.getLogger(__name__)


def install(app: FastAPI) -> None:
    api_errors.install(app)

    @app.exception_handler(DataError)
    async def _data(_: Request, err: DataError) -> JSONResponse:
        return error_response(400, str(err), err.field or "file", "invalid_file")

    @app.exception_handler(redis.RedisError)
    async def _jobstore(_: Request, err: redis.RedisError) -> JSONResponse:
        """Redis refusing writes at its memory limit, or away: a 503 the client retries, never a 500."""
        log.error("job store error: %s: %s", type(err).__name__, err)
        if isinstance(err, redis.exceptions.OutOfMemoryError):
            message = "The job store is full (Redis reached its memory limit); nothing was changed. Try again shortly."
            return error_response(503, message, None, "jobstore_full", {"Retry-After": "10"})
        message = "The job store is unavailable; try again shortly."
        return error_response(503, message, None, "jobstore_unavailable", {"Retry-After": "2"})

    @app.exception_handler(JobConflictError)
    async def _conflict(_: Request, err: JobConflictError) -> JSONResponse:
        return error_response(409, str(err), None, "job_state_conflict")
