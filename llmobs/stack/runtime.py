"""Choosing the runtime: `--runtime`, else the one the stack was last started with, else
LLMOBS_RUNTIME (``auto``: compose when a Docker engine answers, local otherwise)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.errors import UsageError
from llmobs.stack.compose import ComposeStack
from llmobs.stack.local import LocalStack

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.stack.base import Stack
    from llmobs.stack.compose import BeforeDatabaseStart
    from llmobs.stack.local import RedisPasswords

RUNTIMES = ("compose", "local")


def docker_engine_answers(timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers ``/_ping`` on its unix socket (no CLI spawned: fast)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return _tcp_ping(host, timeout)
    path = host.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def _tcp_ping(host: str, timeout: float) -> bool:
    address = host.split("://", 1)[-1].rstrip("/")
    name, _, port = address.rpartition(":")
    try:
        with socket.create_connection((name, int(port)), timeout=timeout) as sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except (OSError, ValueError):
        return False


def _state_file(settings: Settings) -> Path | None:
    return settings.project_dir / "run" / "stack.json" if settings.project_dir else None


def remembered(settings: Settings) -> dict:
    path = _state_file(settings)
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def remember(settings: Settings, runtime: str, profiles: Sequence[str]) -> None:
    path = _state_file(settings)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runtime": runtime, "profiles": list(profiles)}))


def resolve_runtime(settings: Settings, override: str | None = None, *, for_start: bool = False) -> str:
    """The runtime to use. Commands that act on a running stack (status, down, logs, ...) follow
    the runtime it was started with, whatever the settings say now."""
    if override not in (None, "auto", *RUNTIMES):
        raise UsageError(f"unknown runtime {override!r}; choose auto, compose or local")
    if override in RUNTIMES:
        return override
    last = remembered(settings).get("runtime")
    if last not in RUNTIMES:
        last = None
    if last and not for_start:
        return last
    if settings.runtime != "auto":
        return settings.runtime
    return last or ("compose" if docker_engine_answers() else "local")


def get_stack(
    settings: Settings,
    runtime: str | None = None,
    *,
    profiles: Sequence[str] | None = None,
    for_start: bool = False,
    before_database_start: BeforeDatabaseStart | None = None,
    redis_passwords: RedisPasswords | None = None,
) -> Stack:
    """The stack of ``settings``' project in the runtime :func:`resolve_runtime` picks.
    ``before_database_start`` (compose only): a step the caller owns, run before the database
    container starts (``llmobs up`` passes the one that finishes an interrupted restore).
    ``redis_passwords`` (local only): what the Redis ACL user accepts when Redis starts
    (``llmobs up`` passes those of a half-done rotation too)."""
    name = resolve_runtime(settings, runtime, for_start=for_start)
    if profiles is None:
        profiles = remembered(settings).get("profiles", [])
    if name == "local":
        return LocalStack(settings, profiles=tuple(profiles), redis_passwords=redis_passwords)

    return ComposeStack(settings, profiles=tuple(profiles), before_database_start=before_database_start)
