"""OTLP/HTTP receiver (``POST /v1/traces``) and the metrics/health app, as small ASGI apps.

The API key is checked before the body is read. Bodies: ``application/x-protobuf`` or
``application/json``, optionally ``Content-Encoding: gzip``; they are charged to the collector's
memory budget (COLLECTOR_MAX_INFLIGHT_BYTES, 429 when full) as they arrive. The body is read up
to COLLECTOR_MAX_REQUEST_BYTES and decompressed up to COLLECTOR_MAX_DECOMPRESSED_BYTES (413
beyond either: a gzip bomb is stopped after that many bytes). Responses use the request's content
type; errors carry a ``google.rpc.Status`` body and, when retryable (429, 503), a ``Retry-After``
header.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from llmobs.collector.ingest import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    IngestError,
    Ingestor,
    MemoryBudget,
    MemoryExhausted,
    busy,
)
from llmobs.collector.otlp import JsonRequest, ProtobufRequest, export_response, status_body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"


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


class Held:
    """The bytes one request holds of the collector's memory budget, given back at the end."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """MemoryExhausted when the budget has no ``size`` bytes left."""
        self.budget.take(size)
        self.size += size

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


def _client(scope: Scope) -> str | None:
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
        if scope["path"] != TRACES_PATH:
            await respond(send, 404, b"not found: OTLP traces are accepted on POST /v1/traces", "text/plain")
            return
        if scope["method"] != "POST":
            await respond(send, 405, b"method not allowed: use POST", "text/plain", [(b"allow", b"POST")])
            return
        headers = _headers(scope)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            await respond(
                send,
                415,
                f"unsupported content type {content_type or '(none)'}: send {PROTOBUF} or {JSON}".encode(),
                "text/plain",
            )
            return
        as_json = content_type == JSON
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            await self._error(
                send, 415, INVALID_ARGUMENT, f"unsupported content encoding {encoding!r}: use gzip", as_json
            )
            return
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            declared = 0
        ingestor = self.ingestor
        try:
            key = await ingestor.authenticate("http", headers.get("authorization"), _client(scope))
        except IngestError as exc:  # refused before a byte of the body is read
            await self._refuse(send, exc, as_json)
            return
        held = Held(ingestor.memory)
        try:
            if declared > self.max_body:
                raise BodyTooLarge
            body = await read_body(receive, self.max_body, held)
            if encoding == "gzip":
                body = gunzip(body, self.max_decompressed)
                held.take(len(body))
            elif len(body) > self.max_decompressed:
                raise BodyTooLarge

            def parse() -> JsonRequest | ProtobufRequest:
                return JsonRequest(body) if as_json else ProtobufRequest(body)

            result = await ingestor.export("http", key, parse)
        except BodyTooLarge:
            await self._error(
                send,
                413,
                RESOURCE_EXHAUSTED,
                f"request too large (limits: {self.max_body} bytes as sent, {self.max_decompressed} decompressed)",
                as_json,
            )
            return
        except MemoryExhausted as exc:
            await self._refuse(send, busy(str(exc)), as_json)
            return
        except ValueError as exc:
            await self._error(send, 400, INVALID_ARGUMENT, str(exc), as_json)
            return
        except ConnectionError:
            return
        except IngestError as exc:
            await self._refuse(send, exc, as_json)
            return
        finally:
            held.release()
        await respond(
            send, 200, export_response(result.rejected, result.message, json=as_json), JSON if as_json else PROTOBUF
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
