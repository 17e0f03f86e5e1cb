"""``llmobs serve api``: uvicorn serving the API, in one process or several workers."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING, Any

from llmobs import http_guard
from llmobs.api.app import create_app
from llmobs.api.prom import MULTIPROC_ENV, scrape_registry
from llmobs.config import SETTINGS
from llmobs.http_drain import DrainingServer
from llmobs.serving import (
    listening_socket,
    notify_ready,
    serve_replica_metrics,
    setup_logging,
    uvicorn_log_config,
)

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger("llmobs.api")

#: Seconds open connections (event streams) get to finish when the server stops.
GRACEFUL_SHUTDOWN = 5


def _listen_host(settings: Settings, host: str | None) -> str:
    host = host or settings.get_str("BIND_ADDRESS")
    return "0.0.0.0" if host in ("", "*") else host


def settings_environ(settings: Settings) -> dict[str, str]:
    """Every setting's effective value as environment variables, so worker processes (which
    uvicorn starts from an import string) load exactly these settings. Secrets travel in the
    environment of the children, never in their arguments."""
    env = {}
    for s in SETTINGS:
        if s.secret:
            if settings.has_secret(s.name):
                env[s.name] = settings.secret(s.name)
        else:
            env[s.name] = settings.raw(s.name)
    return env


async def _serve_one(app: Any, config: dict[str, Any], sock: socket.socket) -> None:
    """Serve on ``sock`` and tell the supervisor once startup (lifespan: pools) has finished."""

    server = DrainingServer(app, **config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        notify_ready()
    await task


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    """Serve until interrupted. Raises a ConfigError before binding when settings are wrong."""
    import uvicorn

    host = _listen_host(settings, host)
    port = port or settings.get_int("API_PORT")
    level = settings.get_str("LLMOBS_LOG_LEVEL")
    setup_logging(settings, "api")
    common: dict[str, Any] = {
        "log_level": level,
        "log_config": uvicorn_log_config(),
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
        "server_header": False,
        **http_guard.configure(settings),
    }
    if workers <= 1:
        # Our own listening socket with SO_REUSEPORT: replicas of the local runtime share the
        # port, and a replacement started during a rolling restart binds while the old one
        # still serves; the supervisor hears when it is ready.
        sock = listening_socket(host, port)
        serve_replica_metrics(host)
        asyncio.run(_serve_one(create_app(settings), common, sock))
        return
    # Several workers: uvicorn binds and shares the socket itself (handing it ours by fd would
    # make uvicorn treat it as a unix socket, losing TCP_NODELAY: 40 ms per small response).
    create_app(settings)  # fail here, once, on bad settings rather than in every worker
    common.update(host=host, port=port)
    os.environ.update(settings_environ(settings))

    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="llmobs-api-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    serve_replica_metrics(host, scrape_registry())
    try:
        log.info("serving the API on %s:%d with %d workers", host, port, workers)
        uvicorn.run("llmobs.api.app:app_from_environment", factory=True, workers=workers, **common)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
