"""Checking that the ports a service will publish are free, before starting it."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmobs.errors import ConfigError, LlmobsError

if TYPE_CHECKING:
    from llmobs.config import Settings


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT from our own last run is free for the server too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host if host not in ("", "*") else "0.0.0.0", port))
        except OSError:
            return True
    return False


def check_distinct_ports(settings: Settings) -> None:
    """A ConfigError (exit 2) naming both settings when two give the same port: refused before
    anything starts, rather than found when a probe reaches the wrong server."""
    seen: dict[int, str] = {}
    for key, port in settings.ports().items():
        if port in seen:
            raise ConfigError(key, f"port {port} is also {seen[port]}'s", hint="give each service its own port in .env")
        seen[port] = key


def free_port(host: str) -> int:
    """A port free on ``host`` now (the kernel's pick), for a listener only we need to know."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("", "*") else "0.0.0.0", 0))
        return int(sock.getsockname()[1])


def ensure_ports_free(settings: Settings, keys: Sequence[str]) -> None:
    """Raise a clear error naming the setting when one of its ports is taken or shared."""
    check_distinct_ports(settings)
    bind = settings.get_str("BIND_ADDRESS")
    ports = settings.ports()
    for key in keys:
        port = ports[key]
        if port_in_use(bind, port):
            raise LlmobsError(
                f"port {port} ({key}) on {bind} is already in use by another program",
                hint=f"stop the program using it (`ss -ltnp 'sport = :{port}'`) or set {key} to a free port "
                "in .env; nothing was started or changed",
            )
