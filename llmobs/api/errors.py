"""One JSON shape for every error response: ``{"error": {"code", "message", "request_id"}}``.

Validation errors add ``details`` (where and what). Codes are stable identifiers scripts may
branch on; messages are for people. Unexpected exceptions are logged with the request id and
answered with a 500 that carries no internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmobs.store.db import first_line
from llmobs.store.queries import QueryError

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("llmobs.api")

REQUEST_ID_HEADER = "X-Request-ID"


class ErrorDetail(BaseModel):
    location: str
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    request_id: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ApiError(Exception):
    """An expected failure answered with ``status`` and the error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "-")


def error_body(
    request: Request, code: str, message: str, details: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id(request)}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, str]] | None = None,
) -> Response:
    all_headers = {REQUEST_ID_HEADER: request_id(request), **(headers or {})}
    return Response(
        orjson.dumps(error_body(request, code, message, details)),
        status_code=status,
        headers=all_headers,
        media_type="application/json",
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _location(loc: tuple | list) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _validation_response(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "")
        return error_response(
            request, 400, "invalid_json", f"request body is not valid JSON{': ' + str(reason) if reason else ''}"
        )
    details = [{"location": _location(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in errors[:20]]
    summary = "; ".join(f"{d['location']}: {d['message']}" for d in details[:3])
    return error_response(request, 422, "validation_error", f"invalid request: {summary}", details=details)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on this path: Starlette's own Allow header names
    only the first route matching the path (GET /traces/{id} hides DELETE /traces/{id})."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:  # PARTIAL: the path matches, the method does not
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    import psycopg
    from psycopg_pool import PoolTimeout

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(request, exc.status, exc.code, exc.message, headers=exc.headers, details=exc.details)

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        headers = exc.headers
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
            headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(request, exc.status_code, code, message, headers=headers)

    async def query_error(request: Request, exc: Exception) -> Response:
        return error_response(request, 422, "invalid_query", str(exc))

    async def query_canceled(request: Request, exc: Exception) -> Response:
        return error_response(
            request, 422, "query_timeout", "the query took longer than the API allows: narrow its time range or filters"
        )

    async def bad_value(request: Request, exc: Exception) -> Response:
        # Values PostgreSQL cannot take (NUL characters, numbers out of range, ...).
        return error_response(request, 422, "invalid_value", f"a value in the request is not usable: {first_line(exc)}")

    async def db_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable (request %s): %s", request_id(request), type(exc).__name__)
        return error_response(
            request,
            503,
            "database_unavailable",
            "the database is not reachable right now; retry shortly",
            headers={"Retry-After": "5"},
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception(
            "unhandled error in %s %s (request %s)", request.method, request.url.path, request_id(request), exc_info=exc
        )
        return error_response(
            request, 500, "internal_error", f"internal error; quote request id {request_id(request)} when reporting it"
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(QueryError, query_error)
    app.add_exception_handler(psycopg.errors.QueryCanceled, query_canceled)
    app.add_exception_handler(psycopg.DataError, bad_value)
    app.add_exception_handler(psycopg.OperationalError, db_unavailable)
    app.add_exception_handler(PoolTimeout, db_unavailable)
    app.add_exception_handler(Exception, unexpected)


#: OpenAPI ``responses`` entry for error statuses a route may answer with.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid credentials",
        403: "The key's role does not allow this",
        404: "Not found",
        422: "Invalid parameters or query",
        429: "Rate limit exceeded",
        503: "Database or Redis unavailable",
    }
    return {s: {"model": ErrorResponse, "description": descriptions.get(s, "Error")} for s in statuses}
