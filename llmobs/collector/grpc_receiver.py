"""OTLP/gRPC receiver: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

The handler takes the raw request bytes (no deserializer) so a malformed message becomes
INVALID_ARGUMENT rather than an internal error. gzip-compressed messages are decompressed by
gRPC itself, which also refuses a message larger than COLLECTOR_MAX_DECOMPRESSED_BYTES after
decompression (RESOURCE_EXHAUSTED), so a gzip bomb never reaches us.
"""

from __future__ import annotations

import grpc

from llmobs.collector.ingest import IngestError, Ingestor, MemoryExhausted, busy
from llmobs.collector.otlp import ProtobufRequest, export_response, retry_info

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _handler(ingestor: Ingestor):
    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode()
        try:
            key = await ingestor.authenticate("grpc", authorization, _peer_address(context.peer()))
            try:
                ingestor.memory.take(len(request))
            except MemoryExhausted as exc:
                raise busy(str(exc)) from None
            try:
                result = await ingestor.export("grpc", key, lambda: ProtobufRequest(request))
            finally:
                ingestor.memory.give(len(request))
        except IngestError as exc:
            if exc.retry_after:
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry_info(exc.retry_after)),))
            await context.abort(_STATUS[exc.grpc_code], exc.message)
        return export_response(result.rejected, result.message, json=False)

    return export


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
    handler = grpc.unary_unary_rpc_method_handler(_handler(ingestor))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address} (OTLP/gRPC): address in use or not available")
    await server.start()
    return server
