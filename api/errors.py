"""The contract's error body and the one table mapping engine errors to HTTP statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from predmarket.api.metrics import ERRORS
from predmarket.api.responses import JSONResponse
from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.errors import (
    AlreadyExists,
    EngineError,
    IdempotencyKeyReused,
    InsufficientFunds,
    InsufficientShares,
    InvalidState,
    MarketNotOpen,
    NotFound,
    SlippageExceeded,
    Unavailable,
    ValidationError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

log = logging.getLogger("predmarket.api")
#: The methods an ``Allow`` header may name.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

STATUS_BY_ERROR: dict[type[EngineError], int] = {
    NotFound: 404,
    MarketNotOpen: 409,
    InvalidState: 409,
    AlreadyExists: 409,
    IdempotencyKeyReused: 409,
    ValidationError: 422,
    InsufficientFunds: 422,
    InsufficientShares: 422,
    SlippageExceeded: 422,
    Unavailable: 503,
}


class ApiError(Exception):
    """An HTTP-level rejection that is not an engine error (401, 403, 413, 429)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def unauthenticated(message: str = "missing or unknown bearer token") -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", message, {"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", message)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    ERRORS.labels(code).inc()
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register handlers so every error leaves in the contract's shape, and never as a 500."""

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> Response:
        status = STATUS_BY_ERROR.get(type(exc))
        if status is None:  # an engine error no contract code maps: a bug, not the client's fault
            log.error("engine error %s without an HTTP status: %s", type(exc).__name__, exc.message)
            return error_response(500, "INTERNAL", "internal error")
        headers = {"Retry-After": "1"} if isinstance(exc, Unavailable) else None
        return error_response(status, exc.code, exc.message, headers)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, "VALIDATION_ERROR", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 401: "UNAUTHENTICATED", 403: "FORBIDDEN"}.get(
            exc.status_code, "VALIDATION_ERROR")
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allowed = allowed_methods(app, request.scope)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            message = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"
        return error_response(exc.status_code, code, message, headers)

    async def unreachable(_: Request, exc: Exception) -> Response:
        return error_response(503, "UNAVAILABLE", "a backing store is unreachable", {"Retry-After": "1"})

    # Registered per class (not only under Exception below): Starlette answers an ``Exception``
    # handler's response and then re-raises, so uvicorn logs a traceback and drops the connection.
    for cls in UNREACHABLE:
        app.add_exception_handler(cls, unreachable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, UNREACHABLE):
            return error_response(503, "UNAVAILABLE", "a backing store is unreachable", {"Retry-After": "1"})
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error")



def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at the request's path.

    Starlette's 405 names only the methods of the first route whose path matched,
    and one path is served by several routes here (``GET`` and ``POST`` of
    ``/v1/markets``; the fast trade route beside the history route). Each route is
    asked through its public ``matches`` (routers nest), once per method.
    """
    allowed = []
    for method in METHODS:
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed
