"""Errors in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) for every HTTP service.

``install`` adds the handlers that make bad input a 4xx naming the field, make a store outage a 503, and keep
tracebacks out of responses. Services add handlers for their own exceptions on top. Needs FastAPI (the services
have it; the core library imports this module only from them).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from sage_ft.errors import ConfigError, request_error
from sage_ft.protocol.common import TAGGED_UNIONS
from sage_ft.storage import StorageError
from sage_ft.storage.manifest import CorruptManifestError

log = logging.getLogger(__name__)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Bad request: the message names the parameter, file line or field",
    401: "No valid API key",
    404: "Not found",
    405: "Method not allowed (the Allow header lists the methods)",
    409: "Conflict with the resource's state",
    413: "Upload too large",
    415: "Unsupported content type",
    422: "Valid, but cannot be done (the message says why)",
    502: "A backend (model server, worker) failed",
    503: "A dependency is unavailable; retry",
    504: "A backend timed out",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring these error statuses with the error body."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")} for status in statuses}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def not_found(what: str, ident: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No {what} found with id '{ident}'.", param=param, code=f"{what.replace(' ', '_')}_not_found")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods the routes matching this path accept (RFC 9110's Allow), HEAD with GET as Starlette serves it."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})  # any path match is at least PARTIAL
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathGuard:
    """ASGI middleware: a request whose decoded path holds a control character is a 400 before any route sees it.
    Routing would otherwise match on a cut-down name (``.*`` stops at a newline) or hand it to a URL builder that
    refuses it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _CONTROL.search(scope.get("path", "")):
            body = json.dumps(
                {
                    "error": {
                        "message": "The request path contains a control character; names and ids may not.",
                        "type": _TYPES[400],
                        "param": "path",
                        "code": "invalid_request",
                    }
                }
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(PathGuard)

    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.param, err.code, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = first.get("loc", ("",))
        path, msg = request_error({**first, "loc": tuple(where)[1:]}, TAGGED_UNIONS)  # past "body", "query", ...
        if where[0] == "header":
            path = ".".join(part.replace("_", "-").title() for part in path.split("."))  # its name: Idempotency-Key
        param = path or None
        return error_response(400, f"{param}: {msg}" if param else msg, param, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:  # Allow lists every method of the path, across all the routes that serve it
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(err.status_code, str(err.detail), None, None, headers or None)

    @app.exception_handler(ConfigError)
    async def _config(_: Request, err: ConfigError) -> JSONResponse:
        return error_response(400, str(err), err.param, "invalid_request")

    @app.exception_handler(CorruptManifestError)
    async def _corrupt(_: Request, err: CorruptManifestError) -> JSONResponse:
        log.error("%s", err)
        return error_response(409, str(err), "model", "model_corrupt")

    @app.exception_handler(StorageError)
    async def _storage(_: Request, err: StorageError) -> JSONResponse:
        log.error("object store error: %s", err)
        return error_response(503, "The object store is unavailable; try again shortly.", None, "storage_unavailable")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        import redis

        if isinstance(err, redis.RedisError):
            log.error("job store error: %s", err)
            return error_response(503, "The job store is unavailable; try again shortly.", None, "jobstore_unavailable")
        log.exception("unhandled error")
        return error_response(500, "Internal error; it has been logged.", None, "internal_error")
