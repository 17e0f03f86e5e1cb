"""The collector process: wire receivers, pipeline, sampling, writer and publisher together.

One process serves OTLP/gRPC, OTLP/HTTP and the metrics/health port on one asyncio loop. With
COLLECTOR_WORKERS > 1 (see :mod:`llmobs.collector.main`) several such processes share the
OTLP ports through SO_REUSEPORT, and a supervisor serves metrics and health for all of them.

SIGTERM (or SIGINT) drains: the receivers stop taking requests and finish the ones in progress,
tail sampling decides every held trace, and the writer commits what was accepted (for up to
COLLECTOR_DRAIN_SECONDS) before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from llmobs import __version__, http_guard
from llmobs.auth_failures import FailedAuthLimiter
from llmobs.collector.auth import ApiKeyCache
from llmobs.collector.pipeline import SpanPipeline
from llmobs.collector.pricing import load_rules
from llmobs.collector.publish import TracePublisher
from llmobs.collector.sampling import TailPolicy, TailSampler
from llmobs.collector.stats import FLUSH_INTERVAL, IngestCounts, write_counts
from llmobs.collector.writer import Writer
from llmobs.http_drain import DrainingServer
from llmobs.serving import listening_socket, notify_ready, tune_gc, uvicorn_log_config
from llmobs.store import apikeys
from llmobs.store.db import ConnectionSource, connect_kwargs
from llmobs.store.key_events import follow_key_changes

if TYPE_CHECKING:
    import uvicorn

    from llmobs.config import Settings

log = logging.getLogger("llmobs.collector")


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket shared with the other workers and replicas (SO_REUSEPORT); an OSError
    naming the address when it cannot be had."""

    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def start_http_server(
    app: Any, sock: socket.socket, settings: Settings, *, graceful_seconds: int
) -> uvicorn.Server:
    """Serve an ASGI app with uvicorn on ``sock`` without uvicorn's own signal handling (which would
    re-raise SIGTERM after its shutdown and end the process before the writer drained), with the
    header size limit and read deadline of :mod:`llmobs.http_guard`."""

    server = DrainingServer(
        app,
        lifespan="off",
        log_level="warning",
        log_config=uvicorn_log_config(),
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=graceful_seconds,
        **http_guard.configure(settings),
    )
    config = server.config
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    return server


def health_body(up: bool, **extra: Any) -> tuple[bool, dict[str, Any]]:
    return up, {
        "status": "ok" if up else "degraded",
        "version": __version__,
        "database": "up" if up else "down",
        **extra,
    }


def metrics_text(registry: Any = None) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST


#: seconds to connect for a key lookup: a refused connection fails at once, this bounds a hung one
CONTROL_CONNECT_TIMEOUT = 2


class Collector:
    """One collector process."""

    def __init__(self, settings: Settings, host: str, *, serve_metrics: bool = True) -> None:
        self.settings = settings
        self.host = host
        self.serve_metrics = serve_metrics
        self.pipeline: SpanPipeline = SpanPipeline.from_settings(settings)  # ConfigError before binding
        self._stop = asyncio.Event()

    def _control_connections(self) -> ConnectionSource:
        """For key lookups, prices and counters: no background reconnection with a back-off, so
        a lookup fails at once while PostgreSQL is down and succeeds at once when it is back."""
        return ConnectionSource(
            {
                **connect_kwargs(self.settings, "app", connect_timeout=CONTROL_CONNECT_TIMEOUT),
                "application_name": "llmobs-collector",
            }
        )

    async def run(self) -> None:
        # Not at module top: these import prometheus_client, which a collector supervising
        # workers (collector/main.py) must import only after it has set PROMETHEUS_MULTIPROC_DIR.
        from llmobs.collector.grpc_receiver import start_grpc
        from llmobs.collector.http_receiver import HealthApp, OtlpHttpApp
        from llmobs.collector.ingest import Ingestor, MemoryBudget
        from llmobs.collector.metrics import CollectorMetrics

        s = self.settings
        metrics = CollectorMetrics()
        counts = IngestCounts()
        publisher = TracePublisher(s, metrics) if s.get_bool("COLLECTOR_PUBLISH_TRACES") else None
        writer = Writer(
            connect_kwargs(s, "app"),
            metrics,
            writers=s.get_int("COLLECTOR_WRITERS"),
            max_batch=s.get_int("COLLECTOR_BATCH_MAX_SPANS"),
            max_wait_ms=s.get_int("COLLECTOR_BATCH_MAX_WAIT_MS"),
            queue_max=s.get_int("COLLECTOR_QUEUE_MAX_SPANS"),
            on_commit=publisher.offer if publisher else None,
            counts=counts,
        )
        tail = (
            TailSampler(TailPolicy.from_settings(s), writer.submit_acknowledged, metrics)
            if s.get_bool("SAMPLING_TAIL_ENABLED")
            else None
        )
        control = self._control_connections()

        def lookup(token: str) -> Any:
            with control.connection() as conn:
                return apikeys.authenticate(conn, token)

        keys = ApiKeyCache(lookup, ttl=s.get_int("COLLECTOR_AUTH_CACHE_SECONDS"))
        ingestor = Ingestor(
            self.pipeline,
            writer,
            keys,
            metrics,
            counts,
            head_rate=min(s.get_float("SAMPLING_HEAD_RATE"), 1),
            tail=tail,
            memory=MemoryBudget(s.get_int("COLLECTOR_MAX_INFLIGHT_BYTES")),
            auth_failures=FailedAuthLimiter(s.get_int("AUTH_FAILURES_PER_MINUTE")),
        )
        max_decompressed = s.get_int("COLLECTOR_MAX_DECOMPRESSED_BYTES")
        drain_seconds = s.get_int("COLLECTOR_DRAIN_SECONDS")

        grpc_port, http_port = s.get_int("COLLECTOR_GRPC_PORT"), s.get_int("COLLECTOR_HTTP_PORT")
        http_sock = listen_socket(self.host, http_port)
        metrics_sock = listen_socket(self.host, s.get_int("COLLECTOR_METRICS_PORT")) if self.serve_metrics else None
        await writer.start()
        if publisher:
            publisher.start()
        background = [
            asyncio.create_task(self._refresh_prices(control), name="prices"),
            asyncio.create_task(self._flush_counts(control, counts), name="ingest-stats"),
            asyncio.create_task(
                follow_key_changes(connect_kwargs(s, "app"), keys.forget, keys.forget_all), name="key-changes"
            ),
        ]
        if tail:
            background.append(asyncio.create_task(tail.run(), name="tail-sampler"))
        grpc_server = await start_grpc(ingestor, self.host, grpc_port, max_message_bytes=max_decompressed)
        http_server = await start_http_server(
            OtlpHttpApp(ingestor, max_body=s.get_int("COLLECTOR_MAX_REQUEST_BYTES"), max_decompressed=max_decompressed),
            http_sock,
            s,
            graceful_seconds=drain_seconds,
        )
        metrics_server = None
        if metrics_sock is not None:
            metrics_server = await start_http_server(
                HealthApp(
                    lambda: health_body(
                        writer.up, queue_spans=writer.queued_spans, tail_held_spans=tail.held_spans if tail else 0
                    ),
                    metrics_text,
                ),
                metrics_sock,
                s,
                graceful_seconds=1,
            )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tune_gc()
        background.append(asyncio.create_task(self._ready_when_writable(writer), name="ready"))
        log.info(
            "llmobs collector %s: OTLP/gRPC %s:%d, OTLP/HTTP %s:%d%s",
            __version__,
            self.host,
            grpc_port,
            self.host,
            http_port,
            f", metrics {self.host}:{s.get_int('COLLECTOR_METRICS_PORT')}" if metrics_sock else "",
        )
        await self._stop.wait()
        await self._drain(grpc_server, http_server, http_sock, tail, writer)
        for task in background:
            task.cancel()
        await self._write_counts(control, counts)
        if metrics_server is not None and metrics_sock is not None:
            metrics_server.should_exit = True
            await metrics_server.shutdown(sockets=[metrics_sock])
        if publisher:
            await publisher.close()
        control.close()

    @staticmethod
    async def _ready_when_writable(writer: Any) -> None:
        """Tell whoever started us that we serve, once spans can be written: a replacement replica
        (rolling restart) is not ready while its database credentials do not work yet."""
        await writer.wait_up()
        notify_ready()

    async def _drain(
        self, grpc_server: Any, http_server: Any, http_sock: socket.socket, tail: Any, writer: Any
    ) -> None:
        """Stop taking requests, finish those in progress, decide held traces, write everything."""
        drain_seconds = self.settings.get_int("COLLECTOR_DRAIN_SECONDS")
        started = time.monotonic()
        log.info("draining: no new requests; writing what was accepted (up to %d s)", drain_seconds)
        await asyncio.gather(grpc_server.stop(drain_seconds), http_server.shutdown(sockets=[http_sock]))
        if tail:
            tail.flush()
        drained = await writer.drain(max(1.0, drain_seconds - (time.monotonic() - started)))
        log.info("stopped%s", "" if drained else " (some spans could not be written)")

    async def _flush_counts(self, control: ConnectionSource, counts: IngestCounts) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._write_counts(control, counts)

    async def _write_counts(self, control: ConnectionSource, counts: IngestCounts) -> None:
        taken = counts.take()
        if not taken:
            return

        def write() -> None:
            with control.connection(timeout=5) as conn:
                write_counts(conn, taken)

        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            log.debug("ingest counts not written yet (%s)", exc)
            counts.restore(taken)

    async def _refresh_prices(self, control: ConnectionSource) -> None:
        interval = self.settings.get_int("COLLECTOR_PRICE_REFRESH_SECONDS")

        def load() -> Any:
            with control.connection(timeout=10) as conn:
                return load_rules(conn)

        loaded = False
        while True:
            try:
                rules = await asyncio.to_thread(load)
            except Exception as exc:
                log.warning("cannot load model prices (%s); retrying", str(exc).splitlines()[0] if str(exc) else exc)
                await asyncio.sleep(2 if not loaded else interval)
                continue
            self.pipeline.set_prices(rules)
            if not loaded:
                log.info("loaded %d model prices", len(rules))
            loaded = True
            await asyncio.sleep(interval)
