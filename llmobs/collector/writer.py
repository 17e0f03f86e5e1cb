"""Durable, batched writes: a bounded queue, group commit through COPY, and database-down handling.

Requests hand their rows to :meth:`Writer.queue` and wait for the future it returns: the rows of every request queued
meanwhile go into the same COPY and the same commit (group commit), and each waiter is released
only once that commit returned, so an acknowledged span is a committed span. Rows of OTLP log
records and metric points (:mod:`llmobs.store.signals`) share the queue, its limit and the
commits: one COPY per table in the same transaction.

Admission: :meth:`Writer.reserve` counts spans from the moment a request is admitted until their
commit; past ``queue_max`` new requests are refused (the receivers answer 429 /
RESOURCE_EXHAUSTED) instead of growing memory. While the database is unreachable every waiting
and new request fails fast with :class:`DatabaseUnavailable` (503 / UNAVAILABLE); a probe
reconnects every half second and ingestion resumes by itself. While up, a watcher checks the
database every second, so health turns "down" within seconds even when no spans arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmobs.collector.stats import IngestCounts
from llmobs.store.db import first_line, raise_if_closed
from llmobs.store.signals import SPANS, CopyTable
from llmobs.store.spans import MISSING_PARTITION_MESSAGE, CommittedSpan, SpanRow, committed_spans, is_missing_partition

if TYPE_CHECKING:
    import psycopg

    from llmobs.collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)

PROBE_INTERVAL = 0.5
CONNECT_TIMEOUT = 3
#: While up, the database is checked this often (and given this long to answer), so health says
#: "down" within a few seconds of PostgreSQL stopping even when no spans arrive.
WATCH_INTERVAL = 1.0
WATCH_TIMEOUT = 2.0


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached: the client should retry later."""


class QueueFull(Exception):
    """Too many spans accepted but not yet committed: the client should retry later."""


class RowsRefused(Exception):
    """PostgreSQL refused these rows (not a connection problem): retrying will not help."""


@dataclass(eq=False)
class Pending:
    #: rows of ``table`` once encoded in ``data``: CommittedSpan for spans (not the whole SpanRow),
    #: LogRow or MetricRow
    rows: list[Any]
    data: bytes
    #: None for rows acknowledged before they are written (tail sampling): retried until written
    future: asyncio.Future[None] | None
    #: where the rows came from, for llmobs_ingest_stats ("collector-grpc", "collector-http")
    source: str
    table: CopyTable = SPANS
    queued_at: float = field(default_factory=time.monotonic)


class Writer:
    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        metrics: CollectorMetrics,
        *,
        writers: int = 2,
        max_batch: int = 4096,
        max_wait_ms: int = 5,
        queue_max: int = 20000,
        on_commit: Callable[[list[CommittedSpan]], None] | None = None,
        counts: IngestCounts | None = None,
    ) -> None:
        self._connect_kwargs = {**connect_kwargs, "connect_timeout": CONNECT_TIMEOUT}
        self._metrics = metrics
        self._writers = writers
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self._queue_max = queue_max
        self._on_commit = on_commit
        self._counts = counts or IngestCounts()
        self._queue: deque[Pending] = deque()
        self._queued_spans = 0
        self._reserved = 0
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._up_event = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._probe: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.up = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer tasks; the database may still be down (then a probe waits for it)."""
        self._tasks = [asyncio.create_task(self._run(i), name=f"writer-{i}") for i in range(self._writers)]
        self._watch = asyncio.create_task(self._watch_database(), name="db-watch")
        self._mark_down("starting")

    async def wait_up(self) -> None:
        """Return once the database accepts connections."""
        await self._up_event.wait()

    async def drain(self, timeout: float) -> bool:
        """Write everything queued (up to ``timeout`` seconds), then stop. True when all was written."""
        self._closing = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        drained = not self._queue and not self._in_flight
        for task in [*self._tasks, *(t for t in (self._probe, self._watch) if t)]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not drained:
            lost = sum(len(p.rows) for p in self._queue)
            log.error("stopping with %d spans not written (database unavailable during drain)", lost)
            self._fail_waiters(DatabaseUnavailable("the collector is shutting down"))
        return drained

    # -- admission ----------------------------------------------------------------------------

    @property
    def queued_spans(self) -> int:
        return self._reserved

    def reserve(self, spans: int) -> None:
        """Admit a request of ``spans`` spans or raise QueueFull / DatabaseUnavailable."""
        if not self.up:
            raise DatabaseUnavailable("the database is unavailable")
        if self._closing:
            raise DatabaseUnavailable("the collector is shutting down")
        if spans > self._queue_max:
            raise QueueFull(
                f"the request carries {spans} spans, more than COLLECTOR_QUEUE_MAX_SPANS ({self._queue_max}): "
                "send smaller batches"
            )
        if self._reserved + spans > self._queue_max:
            raise QueueFull(f"{self._reserved} spans are waiting to be written")
        self._reserved += spans
        self._metrics.queue_spans.set(self._reserved)

    def release(self, spans: int) -> None:
        self._reserved -= spans
        self._metrics.queue_spans.set(self._reserved)

    # -- submitting ---------------------------------------------------------------------------

    def queue(self, rows: list[Any], source: str, table: CopyTable = SPANS) -> asyncio.Future[None] | None:
        """Encode ``rows`` of ``table`` (already reserved) and queue them; the future of their
        commit (None when there are none). Of spans the writer keeps only a CommittedSpan each, so
        a caller that drops its own references frees the rows now, while they are hot in the cache,
        not after the commit. The future fails with DatabaseUnavailable (retry later) or
        RowsRefused (the rows are bad)."""
        if not rows:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        data = table.encode(rows)
        self._enqueue(Pending(committed_spans(rows) if table is SPANS else rows, data, future, source, table))
        return future

    def submit_acknowledged(self, rows: list[SpanRow], source: str) -> None:
        """Queue rows whose sender was already answered (tail sampling). They count against the
        queue but are never refused; while the database is down they wait for it."""
        if rows:
            self._reserved += len(rows)
            self._enqueue(Pending(committed_spans(rows), SPANS.encode(rows), None, source))

    def _enqueue(self, pending: Pending) -> None:
        self._queue.append(pending)
        self._queued_spans += len(pending.rows)
        self._wake.set()

    # -- the writer tasks ---------------------------------------------------------------------

    async def _take(self) -> list[Pending] | None:
        while True:
            if self._closing and not self._queue:
                return None
            if not self.up:
                await self._up_event.wait()
                continue
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._max_wait and self._queued_spans < self._max_batch and not self._closing:
                # Let requests arriving right now join this commit; skip when the oldest waited enough.
                wait = self._max_wait - (time.monotonic() - self._queue[0].queued_at)
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self._queue or not self.up:
                    continue
            batch = [self._queue.popleft()]
            spans = len(batch[0].rows)
            while self._queue and spans + len(self._queue[0].rows) <= self._max_batch:
                item = self._queue.popleft()
                batch.append(item)
                spans += len(item.rows)
            self._queued_spans -= spans
            return batch

    async def _run(self, index: int) -> None:
        import psycopg

        conn: psycopg.AsyncConnection | None = None
        while True:
            batch = await self._take()
            if batch is None:
                break
            self._in_flight += 1
            try:
                conn = await self._usable(conn)
                await self._write(conn, batch)
            except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, OSError) as exc:
                # ReadOnlySqlTransaction: the connection reached a standby ("cannot execute COPY
                # during recovery"): profile `ha`, db-proxy's write port for the moment of a
                # failover when Patroni already answers as leader but PostgreSQL is still
                # promoting. A new connection reaches the leader: the client retries (503).
                if conn is not None:
                    await conn.close()
                conn = None
                self._requeue_or_fail(batch, DatabaseUnavailable(first_line(exc)))
                self._mark_down(first_line(exc))
            except psycopg.Error as exc:
                log.warning("batch of %d requests refused (%s); writing them one by one", len(batch), first_line(exc))
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()  # type: ignore[union-attr]
                await self._write_each(conn, batch)  # type: ignore[arg-type]
            except Exception:
                log.exception("unexpected error writing %d requests", len(batch))
                self._refuse(batch, "internal error")
            finally:
                self._in_flight -= 1
        if conn is not None:
            await conn.close()

    async def _usable(self, conn: psycopg.AsyncConnection | None) -> psycopg.AsyncConnection:
        """``conn`` if the server has not closed it (a restart), else a new connection: a
        connection that died while idle must not cost a batch its write."""
        import psycopg

        if conn is not None and not conn.closed:
            try:
                raise_if_closed(conn)
                return conn
            except psycopg.OperationalError:
                await conn.close()
        return await psycopg.AsyncConnection.connect(**self._connect_kwargs)

    async def _write(self, conn: psycopg.AsyncConnection, batch: list[Pending]) -> None:
        started = time.perf_counter()
        by_table: dict[str, list[Pending]] = {}
        for item in batch:
            by_table.setdefault(item.table.name, []).append(item)
        async with conn.cursor() as cur:
            for items in by_table.values():
                async with cur.copy(items[0].table.copy_sql) as copy:
                    for item in items:
                        await copy.write(item.data)
        await conn.commit()
        spans = sum(len(p.rows) for p in by_table.get(SPANS.name, ()))
        self._metrics.observe_commit(spans, time.perf_counter() - started)
        self._done(batch)

    async def _write_each(self, conn: psycopg.AsyncConnection, batch: list[Pending]) -> None:
        """Isolate the requests PostgreSQL refuses so the others are still written."""
        import psycopg

        for index, item in enumerate(batch):
            try:
                await self._write(conn, [item])
            except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction) as exc:
                self._requeue_or_fail(batch[index:], DatabaseUnavailable(first_line(exc)))
                await conn.close()
                self._mark_down(first_line(exc))
                return
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()
                if is_missing_partition(exc) and item.future is not None:
                    # maintenance is late, not the client's fault: the sender retries (503)
                    log.error("%d spans refused: %s", len(item.rows), MISSING_PARTITION_MESSAGE)
                    self._requeue_or_fail([item], DatabaseUnavailable(MISSING_PARTITION_MESSAGE))
                    continue
                log.error("PostgreSQL refused %d spans: %s", len(item.rows), first_line(exc))
                self._refuse([item], first_line(exc))

    def _refuse(self, batch: list[Pending], reason: str) -> None:
        for item in batch:
            if item.table is SPANS:
                self._metrics.spans_refused.labels(reason="database_refused").inc(len(item.rows))
                self._counts.add(item.source, item.rows[0].project_id, rejected=len(item.rows))
            self.release(len(item.rows))
            if item.future is not None and not item.future.done():
                item.future.set_exception(RowsRefused(reason))

    def _done(self, batch: list[Pending]) -> None:
        rows: list[CommittedSpan] = []
        for item in batch:
            self.release(len(item.rows))
            if item.table is SPANS:  # ingest stats and new-trace messages are about spans
                rows.extend(item.rows)
                for project_id, n in Counter(r.project_id for r in item.rows).items():
                    self._counts.add(item.source, project_id, accepted=n)
            if item.future is not None and not item.future.done():
                item.future.set_result(None)
        if self._on_commit is not None:
            self._on_commit(rows)

    # -- database down ------------------------------------------------------------------------

    def _requeue_or_fail(self, batch: list[Pending], error: Exception) -> None:
        """After a failed write: waiters get the error (they retry), acknowledged rows wait."""
        for item in reversed(batch):
            if item.future is None:
                self._queue.appendleft(item)
                self._queued_spans += len(item.rows)
            else:
                self.release(len(item.rows))
                if not item.future.done():
                    item.future.set_exception(error)

    def _fail_waiters(self, error: Exception) -> None:
        kept: deque[Pending] = deque()
        for item in self._queue:
            if item.future is None:
                kept.append(item)
            else:
                self._queued_spans -= len(item.rows)
                self.release(len(item.rows))
                if not item.future.done():
                    item.future.set_exception(error)
        self._queue = kept

    def _mark_down(self, reason: str) -> None:
        if self.up:
            log.error("database unavailable: %s; refusing spans until it is back", reason)
        self.up = False
        self._up_event.clear()
        self._metrics.database_up.set(0)
        self._fail_waiters(DatabaseUnavailable(reason))
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_for_database(), name="db-probe")

    async def _watch_database(self) -> None:
        """While up, check the database every WATCH_INTERVAL on a connection of its own, and at once
        when the server closes that connection (a crash or a restart); a check that fails or takes
        over WATCH_TIMEOUT marks it down (the probe then waits for it)."""
        import psycopg

        conn: psycopg.AsyncConnection | None = None
        while True:
            await _readable_or_timeout(conn, WATCH_INTERVAL)
            if not self.up:
                continue
            try:
                async with asyncio.timeout(WATCH_TIMEOUT):
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(**self._connect_kwargs, autocommit=True)
                    await conn.execute("SELECT 1")
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
                self._mark_down(first_line(exc) if str(exc) else "the database did not answer in time")

    async def _wait_for_database(self) -> None:
        import psycopg

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(**self._connect_kwargs, autocommit=True)
                async with conn:
                    await conn.execute("SELECT 1")
            except (psycopg.Error, OSError) as exc:
                log.debug("database probe failed: %s", first_line(exc))
                await asyncio.sleep(PROBE_INTERVAL)
                continue
            log.info("database available")
            self.up = True
            self._metrics.database_up.set(1)
            self._up_event.set()
            self._wake.set()
            return


async def _readable_or_timeout(conn: psycopg.AsyncConnection | None, timeout: float) -> None:
    """Sleep ``timeout`` seconds, or less if the server sends on idle ``conn``: it only does when
    it ends the session, so a killed postmaster is seen in milliseconds, before an `up` that
    restarts it can read a stale "database up" from our health."""
    if conn is None or conn.closed:
        await asyncio.sleep(timeout)
        return
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    fd = conn.pgconn.socket
    loop.add_reader(fd, wake)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await readable
    finally:
        loop.remove_reader(fd)
