"""Outermost ASGI layer: request ids, per-route Prometheus samples, and headers decided along the way
(rate limits) added to whatever response goes out."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmobs.api import prom
from llmobs.api.deps import identify, presented_token
from llmobs.api.errors import REQUEST_ID_HEADER, ApiError, error_response

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: Largest request body accepted (by its Content-Length).
MAX_BODY_BYTES = 16 * 1024 * 1024


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _too_large(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER.lower() not in headers:
                    headers[REQUEST_ID_HEADER] = request_id
                for name, value in state.get("response_headers", {}).items():
                    if name.lower() not in headers:
                        headers[name] = value
                prom.LATENCY.labels(scope["method"], _route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            if _too_large(scope):
                await _refuse_body(scope, send_with_headers, request_id)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            prom.REQUESTS.labels(scope["method"], _route(scope), str(status)).inc()


async def _refuse_body(scope: Scope, send: Send, request_id: str) -> None:
    body = orjson.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "request_id": request_id,
                "message": f"request body over {MAX_BODY_BYTES // (1024 * 1024)} MiB",
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AuthBeforeBody:
    """Checks the credentials of a request with a body (POST, PUT, PATCH under ``/api/`` and
    ``/graphql``) before the body is read: without valid credentials (API key, JWT or the web
    UI's session cookie) a client cannot make the API read, buffer and decode megabytes. The
    route checks them again (from the caches) for its role, rate limit and CSRF token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or not scope["path"].startswith(("/api/", "/graphql"))
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            await identify(
                scope["app"].state.api, presented_token(request), request.client.host if request.client else None
            )
        except ApiError as exc:
            response = error_response(request, exc.status, exc.code, exc.message, headers=exc.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _route(scope: Scope) -> str:
    """The route template (``/api/v1/traces/{trace_id}``): bounded label values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
