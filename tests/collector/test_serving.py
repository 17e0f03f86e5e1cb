"""The listening sockets both servers (api, collector) share among their replicas."""

from __future__ import annotations

import asyncio
import socket

from llmobs.serving import listening_socket


def test_accepted_connections_do_not_wait_for_delayed_acks():
    """Nagle's algorithm is off on every connection the servers accept: otherwise the second
    part of a response waits for the client's delayed ACK, 40 ms per kept-alive request."""

    async def scenario() -> int:
        sock = listening_socket("127.0.0.1", 0)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            nodelay = await asyncio.wait_for(accepted, 5)
            writer.close()
        return nodelay

    assert asyncio.run(scenario()) != 0


def test_replicas_share_the_port():
    first = listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
    finally:
        first.close()
        second.close()
