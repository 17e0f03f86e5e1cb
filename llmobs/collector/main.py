"""`llmobs serve collector`: one collector process (:mod:`llmobs.collector.server`), or with
COLLECTOR_WORKERS > 1 a supervisor of worker processes (:mod:`llmobs.collector.workers`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from llmobs.collector.server import Collector
from llmobs.collector.workers import supervise
from llmobs.errors import LlmobsError
from llmobs.serving import serve_replica_metrics, setup_logging

if TYPE_CHECKING:
    from llmobs.config import Settings


def serve(settings: Settings, host: str | None = None, workers: int | None = None) -> None:
    """Run the collector until SIGTERM/SIGINT. Raises LlmobsError when a port cannot be had or
    a setting the collector needs is missing."""
    host = host or settings.get_str("BIND_ADDRESS") or "127.0.0.1"
    if host in ("*",):
        host = "0.0.0.0"
    workers = workers or settings.get_int("COLLECTOR_WORKERS")
    setup_logging(settings, "collector")
    settings.secret("DB_APP_PASSWORD")  # fail early and clearly when it is missing
    if workers > 1:
        supervise(settings, host, workers)
        return
    collector = Collector(settings, host)
    serve_replica_metrics(host)
    try:
        asyncio.run(collector.run())
    except OSError as exc:
        raise LlmobsError(str(exc), hint="another process holds the port; change COLLECTOR_*_PORT") from None
