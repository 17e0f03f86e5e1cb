"""Limits uvicorn leaves out, for both HTTP servers (api, the collector's OTLP/HTTP receiver).

With httptools (what uvicorn picks when installed) nothing bounds a request's head: a client can
send hundreds of MiB of headers, which the parser accumulates with a cost quadratic in their
size, and nothing bounds how long a client may take to send a request (a slow body holds its
memory forever). :class:`GuardedHttpToolsProtocol` adds both: a request head larger than
HTTP_MAX_HEADER_BYTES is answered 431, a request not fully received HTTP_READ_TIMEOUT_SECONDS
after its first byte is answered 408 (when no response started yet), and the connection is
closed either way. Without httptools, h11 is used with the same header limit.

Imported by the servers only: it imports uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmobs.config import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    HAVE_HTTPTOOLS = True
except ImportError:  # httptools is not installed: h11, which bounds headers itself
    HAVE_HTTPTOOLS = False


def _plain_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


if HAVE_HTTPTOOLS:

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a header size limit and a request read deadline."""

        max_header_bytes = 65536
        read_timeout = 30.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_bytes = 0
            self._in_head = True
            self._heads = 0  # request heads parsed on this connection
            self._deadline: asyncio.TimerHandle | None = None

        def data_received(self, data: bytes) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)
            in_head, heads = self._in_head, self._heads
            super().data_received(data)
            # Counted after parsing, and only for a chunk that began inside a head and ended none
            # (the chunk that ends a head may carry a body, even whole requests): a read is at
            # most a few hundred KiB, so the head parsed is bounded all the same.
            if in_head and heads == self._heads:
                self._head_bytes += len(data)
                if self._head_bytes > self.max_header_bytes:
                    self._refuse(
                        431, "Request Header Fields Too Large", f"request head over {self.max_header_bytes} bytes"
                    )

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._heads += 1
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            self._in_head, self._head_bytes = True, 0
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _read_timed_out(self) -> None:
            self._deadline = None
            self._refuse(408, "Request Timeout", f"request not received within {self.read_timeout:g} s")

        def _refuse(self, status: int, reason: str, message: str) -> None:
            """Answer ``status`` if no response started on this connection yet, then close it."""
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_plain_response(status, reason, message))
            self.transport.close()
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()


def configure(settings: Settings) -> dict[str, Any]:
    """uvicorn options applying HTTP_MAX_HEADER_BYTES and HTTP_READ_TIMEOUT_SECONDS. Call in each
    serving process (workers too): the limits live on the protocol class."""
    max_header = settings.get_int("HTTP_MAX_HEADER_BYTES")
    if not HAVE_HTTPTOOLS:
        return {"http": "h11", "h11_max_incomplete_event_size": max_header}
    GuardedHttpToolsProtocol.max_header_bytes = max_header
    GuardedHttpToolsProtocol.read_timeout = float(settings.get_int("HTTP_READ_TIMEOUT_SECONDS"))
    return {"http": GuardedHttpToolsProtocol}
