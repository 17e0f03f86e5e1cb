"""OTLP/gRPC receiver: ``Export`` of the TraceService, LogsService and MetricsService
(``opentelemetry.proto.collector.{trace,logs,metrics}.v1``).

The handler takes the raw request bytes (no deserializer) so a malformed message becomes
INVALID_ARGUMENT rather than an internal error. gzip-compressed messages are decompressed by
gRPC itself, which also refuses a message larger than COLLECTOR_MAX_DECOMPRESSED_BYTES after
decompression (RESOURCE_EXHAUSTED), so a gzip bomb never reaches us.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc

from llmobs.collector.ingest import ExportResult, Held, IngestError, Ingestor, MemoryExhausted, OtlpSignal
from llmobs.collector.otlp import ProtobufRequest, export_response, retry_info
from llmobs.collector.otlp_signals import LogsProtobufRequest, MetricsProtobufRequest
from llmobs.collector.otlp_signals import export_response as signal_response

if TYPE_CHECKING:
    from llmobs.store.apikeys import ApiKey

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"

#: (request bytes, authenticated key, client address) -> result
Export = Callable[[bytes, "ApiKey", str], Awaitable[ExportResult]]
Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


def _handler(
    ingestor: Ingestor,
    signal: OtlpSignal,
    export_one: Export,
    respond: Callable[[ExportResult], bytes],
) -> Handler:
    """A unary Export handler: the bearer token is checked first, the message is charged to the
    memory budget while it is processed, then its bytes, key and peer go to ``export_one``; an
    IngestError becomes its gRPC status (with RetryInfo when retryable)."""

    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        authorization = None
        for name, value in context.invocation_metadata() or ():
            if name == "authorization":
                authorization = value if isinstance(value, str) else value.decode()
        try:
            peer = context.peer()
            key = await ingestor.authenticate("grpc", signal, authorization, client=_peer_address(peer), remote=peer)
            held = Held(ingestor.memory)
            try:
                try:
                    held.take(len(request))
                except MemoryExhausted as exc:
                    raise ingestor.memory_refusal("grpc", exc, key, peer) from None
                result = await export_one(request, key, peer)
            finally:
                held.release()
        except IngestError as exc:
            if exc.retry_after:
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry_info(exc.retry_after)),))
            await context.abort(_STATUS[exc.grpc_code], exc.message)
        return respond(result)

    return export


def _services(ingestor: Ingestor) -> dict[str, grpc.RpcMethodHandler]:
    """The Export method of each OTLP service."""
    handlers = {
        SERVICE: _handler(
            ingestor,
            "traces",
            lambda body, key, peer: ingestor.export("grpc", key, lambda: ProtobufRequest(body), peer),
            lambda r: export_response(r.rejected, r.message, json=False),
        ),
        LOGS_SERVICE: _handler(
            ingestor,
            "logs",
            lambda body, key, peer: ingestor.export_signal(
                "grpc", "logs", key, lambda: LogsProtobufRequest(body), peer
            ),
            lambda r: signal_response("logs", r.rejected, r.message, json=False),
        ),
        METRICS_SERVICE: _handler(
            ingestor,
            "metrics",
            lambda body, key, peer: ingestor.export_signal(
                "grpc", "metrics", key, lambda: MetricsProtobufRequest(body), peer
            ),
            lambda r: signal_response("metrics", r.rejected, r.message, json=False),
        ),
    }
    return {name: grpc.unary_unary_rpc_method_handler(handler) for name, handler in handlers.items()}


_STATUS = {code.value[0]: code for code in grpc.StatusCode}


def _peer_address(peer: str | None) -> str | None:
    """The address of a gRPC peer (``ipv4:127.0.0.1:5555``, ``ipv6:[::1]:5555``), without its port."""
    if not peer or ":" not in peer:
        return None
    address = peer.split(":", 1)[1].rsplit(":", 1)[0]
    return address.strip("[]") or None


async def start_grpc(ingestor: Ingestor, host: str, port: int, *, max_message_bytes: int) -> grpc.aio.Server:
    """Listen on ``host:port`` with SO_REUSEPORT, like every listener of the stack
    (:mod:`llmobs.serving`): workers and replicas share the port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(service, {"Export": handler})
            for service, handler in _services(ingestor).items()
        )
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address} (OTLP/gRPC): address in use or not available")
    await server.start()
    return server
