"""What both servers (api, collector) need from their host: sockets that replicas can share,
and telling the supervisor when they are ready to serve.

Replicas of one service on one host listen on the same port with SO_REUSEPORT; the kernel
spreads new connections across them. A supervisor that replaces a replica starts the new one
first and stops the old one only after the new one said it is ready, so the port never closes.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

READY_FD_ENV = "LLMOBS_READY_FD"


def listening_socket(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A bound, listening TCP socket with SO_REUSEPORT (several replicas share the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def notify_ready() -> None:
    """Tell the supervisor (if one started us) that every listener is up. Idempotent."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if not fd:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError) as exc:
        log.warning("could not notify the supervisor: %s", exc)
