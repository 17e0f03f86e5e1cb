"""One export request through the pipeline, whichever receiver and signal it came from.

Order: authenticate (:meth:`Ingestor.authenticate`, before the body is read) -> parse -> admit
(queue limit, memory budget) -> convert, normalize, price, redact -> sample -> write and wait for
the commit. OTLP logs and metrics take the same steps (without normalizing and sampling) through
:meth:`Ingestor.export_signal`. Every refusal is an :class:`IngestError` carrying the gRPC code,
the HTTP status and, for retryable ones, a Retry-After; it is counted and logged (rate-limited,
with the remote address and key id, never the key) by the Ingestor.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llmobs.auth_failures import FailedAuthLimiter
from llmobs.collector.auth import ApiKeyCache, KeyLookupFailed, bearer_token
from llmobs.collector.metrics import CollectorMetrics
from llmobs.collector.otlp import InvalidRequest
from llmobs.collector.pipeline import RawSpan, SpanPipeline
from llmobs.collector.refusals import RefusalLog, key_id_in
from llmobs.collector.sampling import TailSampler, head_sample
from llmobs.collector.stats import IngestCounts
from llmobs.collector.writer import DatabaseUnavailable, QueueFull, RowsRefused, Writer
from llmobs.store.signals import LOG_RECORDS, METRIC_POINTS, SPANS, CopyTable

if TYPE_CHECKING:
    from llmobs.collector.otlp_signals import SignalResult
    from llmobs.collector.redact import Redactor
    from llmobs.store.apikeys import ApiKey

log = logging.getLogger(__name__)

# gRPC status codes (grpc.StatusCode values), without importing grpc here.
INVALID_ARGUMENT = 3
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNAVAILABLE = 14
UNAUTHENTICATED = 16

QUEUE_FULL_RETRY_AFTER = 1
DB_DOWN_RETRY_AFTER = 2
#: What one decoded span, log record or metric point is charged against the memory budget,
#: however empty it is.
ITEM_MEMORY_BYTES = 2048


class OtlpRequest(Protocol):
    @property
    def span_count(self) -> int: ...

    def raw_spans(self) -> Iterable[RawSpan]: ...


#: The OTLP signals besides traces, exported through :meth:`Ingestor.export_signal`.
Signal = Literal["logs", "metrics"]
#: Every OTLP signal the collector takes.
OtlpSignal = Literal["traces", "logs", "metrics"]
#: What the items of each OTLP signal are called in messages.
ITEMS: dict[str, str] = {"traces": "spans", "logs": "log records", "metrics": "metrics"}


class SignalRequest(Protocol):
    """A parsed OTLP logs or metrics request (:mod:`llmobs.collector.otlp_signals`)."""

    @property
    def item_count(self) -> int: ...

    def rows(
        self, project_id: int, redactor: Redactor, window: tuple[datetime, datetime] | None = None
    ) -> SignalResult: ...


class MemoryExhausted(Exception):
    """The requests in progress hold COLLECTOR_MAX_INFLIGHT_BYTES already."""


class MemoryBudget:
    """Memory all requests in progress may hold together (COLLECTOR_MAX_INFLIGHT_BYTES): bodies
    as they are read or decompressed, and ITEM_MEMORY_BYTES per decoded item."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise MemoryExhausted (nothing held then)."""
        if size > self.limit:
            raise MemoryExhausted(
                f"the request needs {size} bytes, more than the collector may hold: send less at once"
            )
        if self.used + size > self.limit:
            raise MemoryExhausted(f"{self.used} of {self.limit} bytes held by requests in progress")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


class Held:
    """The bytes one request holds of the collector's memory budget (its body as it is read,
    decompressed), given back at the end."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        """MemoryExhausted when the budget has no ``size`` bytes left."""
        self.budget.take(size)
        self.size += size

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


class IngestError(Exception):
    def __init__(
        self, grpc_code: int, http_status: int, message: str, retry_after: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
        self.http_status = http_status
        self.message = message
        self.retry_after = retry_after
        self.reason = reason


def unauthenticated(message: str) -> IngestError:
    return IngestError(UNAUTHENTICATED, 401, message, reason="unauthenticated")


def invalid(message: str) -> IngestError:
    return IngestError(INVALID_ARGUMENT, 400, message, reason="invalid")


def busy(reason: str) -> IngestError:
    """429 / RESOURCE_EXHAUSTED for a request the collector has no memory for right now."""
    return IngestError(
        RESOURCE_EXHAUSTED,
        429,
        f"collector busy ({reason}; COLLECTOR_MAX_INFLIGHT_BYTES); retry later",
        QUEUE_FULL_RETRY_AFTER,
        "memory_full",
    )


@dataclass(frozen=True)
class ExportResult:
    rejected: int = 0
    message: str = ""


class Ingestor:
    """Ingests OTLP export requests for the receivers: :meth:`authenticate` checks a request's key
    first (before its body is read), then its body goes with that key to :meth:`export` (traces)
    or :meth:`export_signal` (logs, metrics)."""

    def __init__(
        self,
        pipeline: SpanPipeline,
        writer: Writer,
        keys: ApiKeyCache,
        metrics: CollectorMetrics,
        counts: IngestCounts,
        *,
        head_rate: float = 1.0,
        tail: TailSampler | None = None,
        refusals: RefusalLog | None = None,
        memory: MemoryBudget | None = None,
        auth_failures: FailedAuthLimiter | None = None,
    ) -> None:
        self.counts = counts
        self.refusals = refusals or RefusalLog()
        self.memory = memory or MemoryBudget(256 * 1024 * 1024)
        self.auth_failures = auth_failures or FailedAuthLimiter(30)
        self.pipeline = pipeline
        self.writer = writer
        self.keys = keys
        self.metrics = metrics
        self.head_rate = head_rate
        self.tail = tail

    async def authenticate(
        self,
        transport: str,
        signal: OtlpSignal,
        authorization: str | None,
        *,
        client: str | None,
        remote: str | None = None,
    ) -> ApiKey:
        """The writer key of ``authorization`` for a request of ``signal``, checked before the
        request's body is read or decoded. ``client`` is the client's address (failed
        authentications are limited per address), ``remote`` its address as logged.

        Raises IngestError (counted and logged, rate-limited): 429 when ``client`` failed too often
        this minute (AUTH_FAILURES_PER_MINUTE) and the key is not one this process accepted lately
        (those are still served: clients behind one NAT share the limit), 401 unknown key, 403 not a
        writer key, 503 database down.
        """
        try:
            return await self._authenticate(authorization, client, ITEMS[signal])
        except IngestError as exc:
            self._count_refusal(transport, exc, remote, key_id_in(bearer_token(authorization)))
            raise

    async def export(
        self, transport: str, key: ApiKey, parse: Callable[[], OtlpRequest], remote: str | None = None
    ) -> ExportResult:
        """Decode, admit, process and queue one OTLP trace request of ``key`` (from
        :meth:`authenticate`) from ``remote`` (the client's address, for the log); IngestError
        (counted and logged, rate-limited) when refused."""
        return await self._outcome(transport, key, remote, self._export(transport, key, parse))

    async def export_signal(
        self,
        transport: str,
        signal: Signal,
        key: ApiKey,
        parse: Callable[[], SignalRequest],
        remote: str | None = None,
    ) -> ExportResult:
        """One OTLP logs or metrics export of ``key`` (from :meth:`authenticate`): the same
        admission (queue, memory budget), group commit and refusals as spans; rows go to
        ``log_records`` or ``metric_points``."""
        return await self._outcome(transport, key, remote, self._export_signal(transport, signal, key, parse))

    def memory_refusal(self, transport: str, exc: MemoryExhausted, key: ApiKey, remote: str | None) -> IngestError:
        """The 429 for a request whose body the memory budget has no room for (the receivers
        charge bodies as they read them), counted and logged like the other refusals."""
        error = busy(str(exc))
        self._count_refusal(transport, error, remote, key.key_id)
        return error

    def _count_refusal(self, transport: str, exc: IngestError, remote: str | None, key_id: str | None) -> None:
        """Count one refused request and log it (rate-limited), with its key id, never the key."""
        self.metrics.requests.labels(transport=transport, outcome=exc.reason or "error").inc()
        self.refusals.refused(
            reason=exc.reason or "error",
            status=exc.http_status,
            transport=transport,
            remote=remote,
            key_id=key_id,
            message=exc.message,
        )

    async def _outcome(
        self, transport: str, key: ApiKey, remote: str | None, work: Awaitable[ExportResult]
    ) -> ExportResult:
        """Run one export, count its outcome, and log it (rate-limited) when refused."""
        try:
            result = await work
        except IngestError as exc:
            self._count_refusal(transport, exc, remote, key.key_id)
            raise
        self.metrics.requests.labels(transport=transport, outcome="partial" if result.rejected else "ok").inc()
        return result

    async def _authenticate(self, authorization: str | None, client: str | None, what: str) -> ApiKey:
        """The writer or admin key of ``authorization``, or the IngestError refusing it."""
        token = bearer_token(authorization)
        if token is None:  # not a guess: refused without a lookup, not counted
            raise unauthenticated("missing API key: send `Authorization: Bearer <api key>`")
        wait = self.auth_failures.retry_after(client, token)
        if wait:
            raise IngestError(
                RESOURCE_EXHAUSTED,
                429,
                "too many failed authentications from this address (AUTH_FAILURES_PER_MINUTE); retry later",
                wait,
                "auth_rate_limited",
            )
        try:
            key = await self.keys.authenticate(token)
        except KeyLookupFailed:
            raise IngestError(
                UNAVAILABLE,
                503,
                "cannot check the API key: database unavailable",
                DB_DOWN_RETRY_AFTER,
                "db_unavailable",
            ) from None
        if key is None:
            self.auth_failures.failed(client, token)
            raise unauthenticated("invalid, expired or revoked API key")
        self.auth_failures.succeeded(token)
        if not key.allows("writer"):
            raise IngestError(
                PERMISSION_DENIED,
                403,
                f"a {key.role} key cannot ingest {what} (writer or admin needed)",
                reason="permission_denied",
            )
        return key

    def _admit(self, source: str, project_id: int, count: int, signal: str = "traces") -> int:
        """Reserve ``count`` items in the writer's queue and charge their decoded size to the
        memory budget; the bytes charged, for the caller to give back when done. Raises the
        retryable refusal (429, 503) with nothing reserved."""
        self._reserve(source, project_id, count, signal)
        charge = count * ITEM_MEMORY_BYTES
        try:
            self.memory.take(charge)
        except MemoryExhausted as exc:
            self.writer.release(count)
            raise self._refused(source, project_id, count, busy(str(exc)), signal) from None
        return charge

    def _reserve(self, source: str, project_id: int, count: int, signal: str = "traces") -> None:
        """Admit ``count`` items into the writer's queue, or raise the retryable refusal."""
        try:
            self.writer.reserve(count)
        except QueueFull as exc:
            error = IngestError(
                RESOURCE_EXHAUSTED,
                429,
                f"collector queue full ({exc}); retry later",
                QUEUE_FULL_RETRY_AFTER,
                "queue_full",
            )
            raise self._refused(source, project_id, count, error, signal) from None
        except DatabaseUnavailable as exc:
            error = IngestError(UNAVAILABLE, 503, f"{exc}; retry later", DB_DOWN_RETRY_AFTER, "db_unavailable")
            raise self._refused(source, project_id, count, error, signal) from None

    async def _commit(
        self, rows: list[Any], source: str, project_id: int, what: str, table: CopyTable, signal: str = "traces"
    ) -> None:
        """Queue reserved rows and wait for their commit; refusals as IngestError."""
        await self._committed(self.writer.queue(rows, source, table), len(rows), source, project_id, what, signal)

    async def _committed(
        self,
        commit: Awaitable[None] | None,
        count: int,
        source: str,
        project_id: int,
        what: str,
        signal: str = "traces",
    ) -> None:
        """Wait for the commit of ``count`` rows queued by :meth:`Writer.queue` (None: no rows);
        refusals as IngestError."""
        if commit is None:
            return
        try:
            await commit
        except DatabaseUnavailable as exc:
            error = IngestError(
                UNAVAILABLE,
                503,
                f"database unavailable ({exc}); retry later",
                DB_DOWN_RETRY_AFTER,
                "db_unavailable",
            )
            raise self._refused(source, project_id, count, error, signal) from None
        except RowsRefused as exc:
            raise invalid(f"the database refused the {what}: {exc}") from None

    async def _export(self, transport: str, key: ApiKey, parse: Callable[[], OtlpRequest]) -> ExportResult:
        try:
            request = parse()
            count = request.span_count
        except InvalidRequest as exc:
            raise invalid(str(exc)) from None
        self.metrics.spans_received.labels(transport=transport).inc(count)
        if count == 0:
            return ExportResult()

        source = f"collector-{transport}"
        project_id = key.project_id
        writer = self.writer
        charge = self._admit(source, project_id, count)  # decoded spans cost memory even when empty
        reserved = count
        try:
            try:
                raw = list(request.raw_spans())
            except (InvalidRequest, RecursionError) as exc:
                self.counts.add(source, project_id, rejected=count)
                raise invalid(str(exc) if isinstance(exc, InvalidRequest) else "request nested too deeply") from None
            before = self.pipeline.redactor.redactions
            result = self.pipeline.process(raw, project_id)
            del raw
            self.metrics.redactions.inc(self.pipeline.redactor.redactions - before)
            if result.rejected:
                self.metrics.spans_rejected.inc(result.rejected)
                self.counts.add(source, project_id, rejected=result.rejected)
            if result.unknown_price:
                self.metrics.unknown_price.inc(result.unknown_price)
            rows = head_sample(result.rows, self.head_rate)
            if len(rows) < len(result.rows):
                self.metrics.spans_sampled_out.labels(sampler="head").inc(len(result.rows) - len(rows))
            accepted = len(rows)
            if self.tail is not None:
                self.tail.add(rows, result.priority_traces, source)
                rows = []
            writer.release(reserved - len(rows))
            reserved = 0
            answer = ExportResult(result.rejected, result.message)
            queued, commit = len(rows), writer.queue(rows, source, SPANS)
            # The writer keeps what it needs of the rows: dropping ours frees them now, while they are
            # hot in the cache, instead of after the commit (about 3 microseconds per span less).
            del rows, result
            await self._committed(commit, queued, source, project_id, "spans")
        finally:
            self.memory.give(charge)
            if reserved:
                writer.release(reserved)
        self.metrics.spans_accepted.labels(transport=transport).inc(accepted)
        return answer

    async def _export_signal(
        self, transport: str, signal: Signal, key: ApiKey, parse: Callable[[], SignalRequest]
    ) -> ExportResult:
        what = ITEMS[signal]
        try:
            request = parse()
            count = request.item_count
        except InvalidRequest as exc:
            raise invalid(str(exc)) from None
        if count == 0:
            return ExportResult()
        source = f"collector-{transport}"
        charge = self._admit(source, key.project_id, count, signal)
        reserved = count
        try:
            try:
                before = self.pipeline.redactor.redactions
                window = self.pipeline.config.window.bounds(datetime.now(UTC))
                result = request.rows(key.project_id, self.pipeline.redactor, window)
                self.metrics.redactions.inc(self.pipeline.redactor.redactions - before)
            except (InvalidRequest, RecursionError) as exc:
                raise invalid(str(exc) if isinstance(exc, InvalidRequest) else "request nested too deeply") from None
            self.writer.release(reserved - len(result.rows))
            reserved = 0
            await self._commit(
                result.rows, source, key.project_id, what, LOG_RECORDS if signal == "logs" else METRIC_POINTS, signal
            )
        finally:
            self.memory.give(charge)
            if reserved:
                self.writer.release(reserved)
        self.metrics.signal_items.labels(signal=signal, outcome="stored").inc(len(result.rows))
        if result.rejected:
            self.metrics.signal_items.labels(signal=signal, outcome="rejected").inc(result.rejected)
        if result.ignored:
            self.metrics.signal_items.labels(signal=signal, outcome="not_stored").inc(result.ignored)
        return ExportResult(result.rejected, result.message)

    def _refused(self, source: str, project_id: int, items: int, error: IngestError, signal: str) -> IngestError:
        """A retryable refusal of ``items`` items of ``signal``: counted, and ``error`` to raise."""
        if signal == "traces":
            self.metrics.spans_refused.labels(reason=error.reason).inc(items)
            self.counts.add(source, project_id, refused=items)
        else:
            self.metrics.signal_items.labels(signal=signal, outcome="refused").inc(items)
        return error
