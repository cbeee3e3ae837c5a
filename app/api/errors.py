"""Every failure leaves the API in one JSON shape, the OpenAI one the :8000 endpoint uses:
``{"error": {"message", "type", "code", "param"}}`` plus optional details. No stack traces.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.openai_errors import HTTP_CODES, body
from app.registry.edits import ModelExists, ModelNotFound
from app.registry.store import RegistryConflict, RegistryError, RegistryInvalid

log = logging.getLogger("llmbox.api")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
         428: "invalid_request_error", 503: "server_error", 507: "server_error"}


class ApiError(Exception):
    """Raise anywhere in a handler to answer with this status, code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **details: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = status, code, message, headers, details


def error_response(status: int, code: str, message: str, headers: dict | None = None, **details: Any) -> JSONResponse:
    return JSONResponse(body(message, TYPES.get(status, "api_error"), code, **details), status_code=status,
                        headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item["loc"] if p != "body")
        parts.append(f"{where or 'body'}: {item['msg']}")
    return "; ".join(parts)


def _plain(status: int, code: str):
    async def handler(_: Request, exc: Exception):
        return error_response(status, code, str(exc))

    return handler


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the error shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        return error_response(400, "invalid_request", _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RegistryConflict)
    async def _conflict(_: Request, exc: RegistryConflict):
        return error_response(409, "revision_conflict", str(exc), {"ETag": f'"{exc.current_revision}"'},
                              current_revision=exc.current_revision)

    # Exceptions of the registry layer, each with the status and code a client can act on.
    for kind, status, code in ((RegistryInvalid, 400, "invalid_registry"), (ModelNotFound, 404, "model_not_found"),
                               (ModelExists, 409, "model_exists"), (RegistryError, 404, "not_found")):
        app.add_exception_handler(kind, _plain(status, code))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")  # the trace goes to the log, never to the client
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the API log")
