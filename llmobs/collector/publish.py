"""New-trace announcements on Redis pub/sub, after each commit (the API's live stream listens).

Channel ``llmobs:traces:<project_id>``; one JSON message per trace present in a committed batch::

    {"project_id": 1, "trace_id": "...", "span_count": 4, "service_name": "chatbot",
     "root_name": "POST /chat", "start_time": "2025-01-01T12:00:00.123456+00:00", "has_error": false}

``span_count`` counts the trace's spans in that batch (a trace written in several batches is
announced several times); ``root_name``/``service_name`` come from its root span when the batch
has it. Best effort: messages go through a small bounded queue, channels nobody subscribes to are
skipped (one PUBSUB NUMSUB per batch), and while Redis is unreachable messages are dropped and
counted; ingestion never waits for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from llmobs.store.spans import CommittedSpan, SpanRow

if TYPE_CHECKING:
    from llmobs.collector.metrics import CollectorMetrics
    from llmobs.config import Settings

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "llmobs:traces:"
QUEUE_BATCHES = 256
RETRY_AFTER_FAILURE = 5.0


def trace_channel(project_id: int) -> str:
    return f"{CHANNEL_PREFIX}{project_id}"


def trace_messages(rows: Iterable[SpanRow | CommittedSpan]) -> dict[str, list[dict[str, Any]]]:
    """The announcement of each trace in ``rows``, grouped by channel."""
    traces: dict[tuple[int, str], list[Any]] = {}
    for r in rows:
        key = (r.project_id, r.trace_id)
        t = traces.get(key)
        if t is None:
            # project, trace, count, service, root name, start, error, service is the root's
            t = traces[key] = [r.project_id, r.trace_id, 0, r.service_name, None, r.start_time, False, False]
        t[2] += 1
        if r.parent_span_id is None:
            t[3], t[4], t[7] = r.service_name, r.name, True
        if r.start_time < t[5]:
            t[5] = r.start_time
        if r.status_code == "error":
            t[6] = True
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for project_id, trace_id, count, service, root, start, error, _ in traces.values():
        by_channel.setdefault(trace_channel(project_id), []).append(
            {
                "project_id": project_id,
                "trace_id": trace_id,
                "span_count": count,
                "service_name": service,
                "root_name": root,
                "start_time": start.isoformat(),
                "has_error": error,
            }
        )
    return by_channel


class TracePublisher:
    def __init__(self, settings: Settings, metrics: CollectorMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: asyncio.Queue[list[CommittedSpan]] = asyncio.Queue(QUEUE_BATCHES)
        self._redis: Any = None
        self._quiet_until = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trace-publisher")

    def offer(self, rows: list[CommittedSpan]) -> None:
        """Queue a committed batch for announcement; never blocks (drops when the queue is full)."""
        if time.monotonic() < self._quiet_until:
            return
        try:
            self._queue.put_nowait(rows)
        except asyncio.QueueFull:
            self._metrics.publish_errors.inc()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    def _client(self) -> Any:
        if self._redis is None:
            import redis.asyncio as redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            s = self._settings
            self._redis = redis.Redis(
                host=s.redis_host,
                port=s.get_int("REDIS_PORT"),
                username=s.get_str("REDIS_USER") or None,
                password=s.secret("REDIS_PASSWORD") if s.has_secret("REDIS_PASSWORD") else None,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                health_check_interval=30,
                retry=Retry(NoBackoff(), 0),  # fail fast: the next batch tries again after a pause
            )
        return self._redis

    async def _run(self) -> None:
        while True:
            rows = await self._queue.get()
            if time.monotonic() < self._quiet_until:
                continue
            try:
                await self._publish(rows)
            except Exception as exc:
                self._metrics.publish_errors.inc()
                log.warning(
                    "cannot publish new traces to Redis (%s); retrying in %g s",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    RETRY_AFTER_FAILURE,
                )
                self._quiet_until = time.monotonic() + RETRY_AFTER_FAILURE
                while not self._queue.empty():
                    self._queue.get_nowait()

    async def _publish(self, rows: list[CommittedSpan]) -> None:
        client = self._client()
        channels = {trace_channel(p): p for p in {r.project_id for r in rows}}
        listened = {
            channels[c.decode() if isinstance(c, bytes) else c] for c, n in await client.pubsub_numsub(*channels) if n
        }
        if not listened:
            return
        if len(listened) < len(channels):
            rows = [r for r in rows if r.project_id in listened]
        messages = trace_messages(rows)
        async with client.pipeline(transaction=False) as pipe:
            count = 0
            for channel, items in messages.items():
                for message in items:
                    pipe.publish(channel, orjson.dumps(message))
                    count += 1
            await pipe.execute()
        self._metrics.traces_published.inc(count)
