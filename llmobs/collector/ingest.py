"""One export request through the pipeline, whichever receiver it came from.

Order: authenticate (before the body is read) -> parse -> admit (queue limit, memory budget) ->
convert, normalize, price, redact -> sample -> write and wait for the commit. Every refusal is an
:class:`IngestError` carrying the gRPC code, the HTTP status and, for retryable ones, a Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from llmobs.auth_failures import FailedAuthLimiter
from llmobs.collector.auth import ApiKeyCache, KeyLookupFailed, bearer_token
from llmobs.collector.metrics import CollectorMetrics
from llmobs.collector.otlp import InvalidRequest
from llmobs.collector.pipeline import RawSpan, SpanPipeline
from llmobs.collector.sampling import TailSampler, head_sample
from llmobs.collector.stats import IngestCounts
from llmobs.collector.writer import DatabaseUnavailable, QueueFull, RowsRefused, Writer
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
#: What one decoded span is charged against the memory budget, however empty it is.
SPAN_MEMORY_BYTES = 2048


class OtlpRequest(Protocol):
    @property
    def span_count(self) -> int: ...

    def raw_spans(self) -> Iterable[RawSpan]: ...


class MemoryExhausted(Exception):
    """The requests in progress hold COLLECTOR_MAX_INFLIGHT_BYTES already."""


class MemoryBudget:
    """Memory all requests in progress may hold together (COLLECTOR_MAX_INFLIGHT_BYTES): bodies
    as they are read or decompressed, and SPAN_MEMORY_BYTES per decoded span."""

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


def busy(reason: str) -> IngestError:
    """429 / RESOURCE_EXHAUSTED for a request the collector has no memory for right now."""
    return IngestError(
        RESOURCE_EXHAUSTED,
        429,
        f"collector busy ({reason}; COLLECTOR_MAX_INFLIGHT_BYTES); retry later",
        QUEUE_FULL_RETRY_AFTER,
        "memory_full",
    )


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


@dataclass(frozen=True)
class ExportResult:
    rejected: int = 0
    message: str = ""


class Ingestor:
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
        memory: MemoryBudget | None = None,
        auth_failures: FailedAuthLimiter | None = None,
    ) -> None:
        self.memory = memory or MemoryBudget(256 * 1024 * 1024)
        self.auth_failures = auth_failures or FailedAuthLimiter(30)
        self.counts = counts
        self.pipeline = pipeline
        self.writer = writer
        self.keys = keys
        self.metrics = metrics
        self.head_rate = head_rate
        self.tail = tail

    async def authenticate(self, transport: str, authorization: str | None, client: str | None) -> ApiKey:
        """The writer key of ``authorization``, checked before the request's body is read or decoded.

        Raises IngestError: 429 when ``client`` failed too often this minute
        (AUTH_FAILURES_PER_MINUTE), 401 unknown key, 403 not a writer key, 503 database down.
        """
        try:
            return await self._authenticate(authorization, client)
        except IngestError as exc:
            self.metrics.requests.labels(transport=transport, outcome=exc.reason or "error").inc()
            raise

    async def _authenticate(self, authorization: str | None, client: str | None) -> ApiKey:
        token = bearer_token(authorization)
        if token is None:  # not a guess: refused without a lookup, not counted
            raise unauthenticated("missing API key: send `Authorization: Bearer <api key>`")
        wait = self.auth_failures.retry_after(client)
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
            self.auth_failures.failed(client)
            raise unauthenticated("invalid, expired or revoked API key")
        if not key.allows("writer"):
            raise IngestError(
                PERMISSION_DENIED,
                403,
                f"a {key.role} key cannot ingest spans (writer or admin needed)",
                reason="permission_denied",
            )
        return key

    async def export(self, transport: str, key: ApiKey, parse: Callable[[], OtlpRequest]) -> ExportResult:
        """Decode, admit, process and write one authenticated request; IngestError when refused."""
        try:
            result = await self._export(transport, key, parse)
        except IngestError as exc:
            self.metrics.requests.labels(transport=transport, outcome=exc.reason or "error").inc()
            raise
        self.metrics.requests.labels(transport=transport, outcome="partial" if result.rejected else "ok").inc()
        return result

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
        self._reserve(source, key.project_id, count)
        # Decoded spans cost memory even when empty: charged before they are made.
        charge = count * SPAN_MEMORY_BYTES
        try:
            self.memory.take(charge)
        except MemoryExhausted as exc:
            self.writer.release(count)
            self.metrics.spans_refused.labels(reason="memory_full").inc(count)
            raise busy(str(exc)) from None
        try:
            return await self._process(transport, key.project_id, request, count)
        finally:
            self.memory.give(charge)

    def _reserve(self, source: str, project_id: int, count: int) -> None:
        """Admit ``count`` spans to the writer's queue, or raise the refusal (429, 503)."""
        try:
            self.writer.reserve(count)
        except QueueFull as exc:
            raise self._refused(
                source,
                project_id,
                count,
                RESOURCE_EXHAUSTED,
                429,
                "queue_full",
                f"collector queue full ({exc}); retry later",
                QUEUE_FULL_RETRY_AFTER,
            ) from None
        except DatabaseUnavailable as exc:
            raise self._refused(
                source,
                project_id,
                count,
                UNAVAILABLE,
                503,
                "db_unavailable",
                f"{exc}; retry later",
                DB_DOWN_RETRY_AFTER,
            ) from None

    async def _process(self, transport: str, project_id: int, request: OtlpRequest, count: int) -> ExportResult:
        """Convert, process and write ``count`` reserved spans."""
        source = f"collector-{transport}"
        writer = self.writer
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
            try:
                await writer.submit(rows, source)
            except DatabaseUnavailable as exc:
                raise self._refused(
                    source,
                    project_id,
                    len(rows),
                    UNAVAILABLE,
                    503,
                    "db_unavailable",
                    f"database unavailable ({exc}); retry later",
                    DB_DOWN_RETRY_AFTER,
                ) from None
            except RowsRefused as exc:
                raise invalid(f"the database refused the spans: {exc}") from None
        finally:
            if reserved:
                writer.release(reserved)
        self.metrics.spans_accepted.labels(transport=transport).inc(accepted)
        return ExportResult(result.rejected, result.message)

    def _refused(
        self,
        source: str,
        project_id: int,
        spans: int,
        grpc_code: int,
        http_status: int,
        reason: str,
        message: str,
        retry_after: int,
    ) -> IngestError:
        """A retryable refusal: counted, and the error to raise."""
        self.metrics.spans_refused.labels(reason=reason).inc(spans)
        self.counts.add(source, project_id, refused=spans)
        return IngestError(grpc_code, http_status, message, retry_after, reason)
