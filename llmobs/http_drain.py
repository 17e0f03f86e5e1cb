"""Stopping an HTTP server without resetting its clients' kept-alive connections.

When uvicorn shuts down it closes every idle kept-alive connection at once. A client that sends
its next request on one at that moment gets a connection reset, and httpx or requests report an
error instead of retrying: during a rolling restart, a client talking straight to a replica (the
local runtime, whose replicas share the port) would see a failed request.

A :class:`DrainingServer` first stops accepting connections, then for
:data:`IDLE_DRAIN_SECONDS` answers the next request on each connection it still has with
``Connection: close``, so the client opens a new connection (to a replica that is not
stopping), and only then shuts down as uvicorn does. Imported by the servers only: it imports
uvicorn.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

#: how long a stopping server keeps the connections it has, answering with ``Connection: close``
IDLE_DRAIN_SECONDS = 1.0

Message = MutableMapping[str, Any]


class CloseWhenDraining:
    """ASGI wrapper: once ``draining`` is set, every response carries ``Connection: close``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.draining = False

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if self.draining and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


class DrainingServer(uvicorn.Server):
    """A uvicorn server for ``app`` (any ASGI app) whose shutdown drains kept-alive connections."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.drain = CloseWhenDraining(app)
        super().__init__(uvicorn.Config(self.drain, **config))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        self.drain.draining = True
        deadline = time.monotonic() + IDLE_DRAIN_SECONDS
        while self.server_state.connections and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await super().shutdown()
