"""OTLP/HTTP receiver (``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``) and the
metrics/health app, as small ASGI apps.

The API key is checked before the body is read. Bodies: ``application/x-protobuf`` or
``application/json``, optionally ``Content-Encoding: gzip``; they are charged to the collector's
memory budget (COLLECTOR_MAX_INFLIGHT_BYTES, 429 when full) as they arrive. The body is read up
to COLLECTOR_MAX_REQUEST_BYTES and decompressed up to COLLECTOR_MAX_DECOMPRESSED_BYTES (413
beyond either: a gzip bomb is stopped after that many bytes). Responses use the request's content
type; errors carry a ``google.rpc.Status`` body and, when retryable (429, 503), a ``Retry-After``
header.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llmobs.collector.auth import bearer_token
from llmobs.collector.ingest import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    Held,
    IngestError,
    Ingestor,
    MemoryExhausted,
    OtlpSignal,
)
from llmobs.collector.otlp import JsonRequest, ProtobufRequest, export_response, status_body
from llmobs.collector.otlp_signals import (
    LogsJsonRequest,
    LogsProtobufRequest,
    MetricsJsonRequest,
    MetricsProtobufRequest,
)
from llmobs.collector.otlp_signals import export_response as signal_response
from llmobs.collector.refusals import key_id_in

if TYPE_CHECKING:
    from llmobs.store.apikeys import ApiKey

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"
METRICS_PATH = "/v1/metrics"
#: The OTLP signal each path takes.
SIGNALS: dict[str, OtlpSignal] = {
    TRACES_PATH: "traces",
    LOGS_PATH: "logs",
    METRICS_PATH: "metrics",
}


class BodyTooLarge(Exception):
    pass


async def respond(
    send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _client(scope: Scope) -> str | None:
    """The address of the client of an ASGI request (failed authentications are counted per address)."""
    client = scope.get("client")
    return client[0] if client else None


async def read_body(receive: Receive, limit: int, held: Held) -> bytes:
    """The body, up to ``limit`` bytes (BodyTooLarge past it), each chunk charged to ``held``
    as it arrives (MemoryExhausted when the collector holds too much already)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        held.take(len(chunk))
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes; BodyTooLarge past it (gzip bombs stop here)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"invalid gzip body: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    if not inflater.eof:
        raise ValueError("invalid gzip body: truncated")
    return data


def _remote(scope: Scope) -> str | None:
    """``host:port`` of the client of an ASGI request."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class OtlpHttpApp:
    def __init__(self, ingestor: Ingestor, *, max_body: int, max_decompressed: int) -> None:
        self.ingestor = ingestor
        self.max_body = max_body
        self.max_decompressed = max_decompressed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        refused = functools.partial(self._refused, scope, headers)
        path = scope["path"]
        if path not in SIGNALS:
            refused(404, "not_found", f"no route {path[:200]}")
            await respond(
                send, 404, b"not found: OTLP is accepted on POST /v1/traces, /v1/logs and /v1/metrics", "text/plain"
            )
            return
        if scope["method"] != "POST":
            refused(405, "method_not_allowed", f"method {scope['method']}")
            await respond(send, 405, b"method not allowed: use POST", "text/plain", [(b"allow", b"POST")])
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            message = f"unsupported content type {content_type[:100] or '(none)'}: send {PROTOBUF} or {JSON}"
            refused(415, "unsupported_media_type", message)
            await respond(send, 415, message.encode(), "text/plain")
            return
        as_json = content_type == JSON
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            message = f"unsupported content encoding {encoding[:100]!r}: use gzip"
            refused(415, "unsupported_media_type", message)
            await self._error(send, 415, INVALID_ARGUMENT, message, as_json)
            return
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            declared = 0
        ingestor = self.ingestor
        remote = _remote(scope)
        signal = SIGNALS[path]
        try:
            key = await ingestor.authenticate(
                "http", signal, headers.get("authorization"), client=_client(scope), remote=remote
            )
        except IngestError as exc:  # refused before a byte of the body is read
            await self._refuse(send, exc, as_json)
            return
        held = Held(ingestor.memory)
        try:
            try:
                body = await self._read(receive, declared, encoding, held)
            except BodyTooLarge:
                message = (
                    f"request too large (limits: {self.max_body} bytes as sent, {self.max_decompressed} decompressed)"
                )
                refused(413, "too_large", message)
                await self._error(send, 413, RESOURCE_EXHAUSTED, message, as_json)
                return
            except MemoryExhausted as exc:
                await self._refuse(send, ingestor.memory_refusal("http", exc, key, remote), as_json)
                return
            except ValueError as exc:
                refused(400, "invalid", str(exc))
                await self._error(send, 400, INVALID_ARGUMENT, str(exc), as_json)
                return
            except ConnectionError:
                return
            try:
                answer = await self._export(signal, body, as_json, key, remote)
            except IngestError as exc:
                await self._refuse(send, exc, as_json)
                return
        finally:
            held.release()
        await respond(send, 200, answer, JSON if as_json else PROTOBUF)

    async def _read(self, receive: Receive, declared: int, encoding: str, held: Held) -> bytes:
        """The request's body, decompressed, charged to ``held``. Raises BodyTooLarge past
        COLLECTOR_MAX_REQUEST_BYTES or COLLECTOR_MAX_DECOMPRESSED_BYTES, MemoryExhausted when the
        memory budget is full, ValueError for invalid gzip, ConnectionError when the client left."""
        if declared > self.max_body:
            raise BodyTooLarge
        body = await read_body(receive, self.max_body, held)
        if encoding == "gzip":
            body = gunzip(body, self.max_decompressed)
            held.take(len(body))
        elif len(body) > self.max_decompressed:
            raise BodyTooLarge
        return body

    async def _export(self, signal: OtlpSignal, body: bytes, as_json: bool, key: ApiKey, remote: str | None) -> bytes:
        """Export one request of ``signal`` from ``remote``, authenticated as ``key``; the response body."""
        if signal == "traces":
            result = await self.ingestor.export(
                "http", key, lambda: JsonRequest(body) if as_json else ProtobufRequest(body), remote
            )
            return export_response(result.rejected, result.message, json=as_json)
        if signal == "logs":
            result = await self.ingestor.export_signal(
                "http", "logs", key, lambda: LogsJsonRequest(body) if as_json else LogsProtobufRequest(body), remote
            )
            return signal_response("logs", result.rejected, result.message, json=as_json)
        result = await self.ingestor.export_signal(
            "http",
            "metrics",
            key,
            lambda: MetricsJsonRequest(body) if as_json else MetricsProtobufRequest(body),
            remote,
        )
        return signal_response("metrics", result.rejected, result.message, json=as_json)

    def _refused(self, scope: Scope, headers: dict[str, str], status: int, reason: str, message: str) -> None:
        """Log a request refused before it reached the ingestor (which logs the rest)."""
        self.ingestor.refusals.refused(
            reason=reason,
            status=status,
            transport="http",
            remote=_remote(scope),
            key_id=key_id_in(bearer_token(headers.get("authorization"))),
            message=message,
        )

    async def _refuse(self, send: Send, exc: IngestError, as_json: bool) -> None:
        extra = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after else None
        await self._error(send, exc.http_status, exc.grpc_code, exc.message, as_json, extra)

    async def _error(
        self,
        send: Send,
        status: int,
        grpc_code: int,
        message: str,
        as_json: bool,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await respond(send, status, status_body(grpc_code, message, json=as_json), JSON if as_json else PROTOBUF, extra)


class HealthApp:
    """``GET /health`` (JSON; 200 while the database accepts writes, else 503) and ``GET /metrics``."""

    def __init__(
        self, health: Callable[[], tuple[bool, dict[str, Any]]], metrics: Callable[[], tuple[bytes, str]]
    ) -> None:
        self.health = health
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import orjson

        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed", "text/plain", [(b"allow", b"GET")])
        elif scope["path"] == "/health":
            healthy, body = self.health()
            await respond(send, 200 if healthy else 503, orjson.dumps(body), JSON)
        elif scope["path"] == "/metrics":
            data, content_type = self.metrics()
            await respond(send, 200, data, content_type)
        else:
            await respond(send, 404, b"not found: try /health or /metrics", "text/plain")
