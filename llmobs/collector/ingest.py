"""One export request through the pipeline, whichever receiver and signal it came from.

Order: authenticate -> parse -> admit (queue limit) -> convert, normalize, price, redact ->
sample -> write and wait for the commit. OTLP logs and metrics take the same steps (without
normalizing and sampling) through :meth:`Ingestor.export_signal`. Every refusal is an :class:`IngestError` carrying the
gRPC code, the HTTP status and, for retryable ones, a Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

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


class OtlpRequest(Protocol):
    @property
    def span_count(self) -> int: ...

    def raw_spans(self) -> Iterable[RawSpan]: ...


Signal = Literal["logs", "metrics"]


class SignalRequest(Protocol):
    """A parsed OTLP logs or metrics request (:mod:`llmobs.collector.otlp_signals`)."""

    @property
    def item_count(self) -> int: ...

    def rows(self, project_id: int, redactor: Redactor) -> SignalResult: ...


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
        refusals: RefusalLog | None = None,
    ) -> None:
        self.counts = counts
        self.refusals = refusals or RefusalLog()
        self.pipeline = pipeline
        self.writer = writer
        self.keys = keys
        self.metrics = metrics
        self.head_rate = head_rate
        self.tail = tail

    async def export(
        self,
        transport: str,
        authorization: str | None,
        parse: Callable[[], OtlpRequest],
        remote: str | None = None,
    ) -> ExportResult:
        """Authenticate, decode, process and queue one OTLP trace request from ``remote`` (the
        client's address, for the log); IngestError (counted and logged, rate-limited) when refused."""
        return await self._outcome(transport, authorization, remote, self._export(transport, authorization, parse))

    async def export_signal(
        self,
        transport: str,
        signal: Signal,
        authorization: str | None,
        parse: Callable[[], SignalRequest],
        remote: str | None = None,
    ) -> ExportResult:
        """One OTLP logs or metrics export: the same key check, admission, group commit and
        refusals as spans; rows go to ``log_records`` or ``metric_points``."""
        return await self._outcome(
            transport, authorization, remote, self._export_signal(transport, signal, authorization, parse)
        )

    async def _outcome(
        self, transport: str, authorization: str | None, remote: str | None, work: Awaitable[ExportResult]
    ) -> ExportResult:
        """Run one export, count its outcome, and log it (rate-limited) when refused."""
        try:
            result = await work
        except IngestError as exc:
            self.metrics.requests.labels(transport=transport, outcome=exc.reason or "error").inc()
            self.refusals.refused(
                reason=exc.reason or "error",
                status=exc.http_status,
                transport=transport,
                remote=remote,
                key_id=key_id_in(bearer_token(authorization)),
                message=exc.message,
            )
            raise
        self.metrics.requests.labels(transport=transport, outcome="partial" if result.rejected else "ok").inc()
        return result

    async def _authorize(self, authorization: str | None, what: str) -> ApiKey:
        """The writer or admin key of ``authorization``, or the IngestError refusing it."""
        token = bearer_token(authorization)
        if token is None:
            raise unauthenticated("missing API key: send `Authorization: Bearer <api key>`")
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
            raise unauthenticated("invalid, expired or revoked API key")
        if not key.allows("writer"):
            raise IngestError(
                PERMISSION_DENIED,
                403,
                f"a {key.role} key cannot ingest {what} (writer or admin needed)",
                reason="permission_denied",
            )
        return key

    def _reserve(self, source: str, project_id: int, count: int, signal: str = "traces") -> None:
        """Admit ``count`` items into the writer's queue, or raise the retryable refusal."""
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
                signal,
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
                signal,
            ) from None

    async def _commit(
        self, rows: list[Any], source: str, project_id: int, what: str, table: CopyTable, signal: str = "traces"
    ) -> None:
        """Queue reserved rows and wait for their commit; refusals as IngestError."""
        try:
            await self.writer.submit(rows, source, table)
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
                signal,
            ) from None
        except RowsRefused as exc:
            raise invalid(f"the database refused the {what}: {exc}") from None

    async def _export(
        self, transport: str, authorization: str | None, parse: Callable[[], OtlpRequest]
    ) -> ExportResult:
        key = await self._authorize(authorization, "spans")
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
        self._reserve(source, project_id, count)
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
            await self._commit(rows, source, project_id, "spans", SPANS)
        finally:
            if reserved:
                writer.release(reserved)
        self.metrics.spans_accepted.labels(transport=transport).inc(accepted)
        return ExportResult(result.rejected, result.message)

    async def _export_signal(
        self, transport: str, signal: Signal, authorization: str | None, parse: Callable[[], SignalRequest]
    ) -> ExportResult:
        what = "log records" if signal == "logs" else "metrics"
        key = await self._authorize(authorization, what)
        try:
            request = parse()
            count = request.item_count
        except InvalidRequest as exc:
            raise invalid(str(exc)) from None
        if count == 0:
            return ExportResult()
        source = f"collector-{transport}"
        self._reserve(source, key.project_id, count, signal)
        reserved = count
        try:
            try:
                before = self.pipeline.redactor.redactions
                result = request.rows(key.project_id, self.pipeline.redactor)
                self.metrics.redactions.inc(self.pipeline.redactor.redactions - before)
            except (InvalidRequest, RecursionError) as exc:
                raise invalid(str(exc) if isinstance(exc, InvalidRequest) else "request nested too deeply") from None
            self.writer.release(reserved - len(result.rows))
            reserved = 0
            await self._commit(
                result.rows, source, key.project_id, what, LOG_RECORDS if signal == "logs" else METRIC_POINTS, signal
            )
        finally:
            if reserved:
                self.writer.release(reserved)
        self.metrics.signal_items.labels(signal=signal, outcome="stored").inc(len(result.rows))
        if result.rejected:
            self.metrics.signal_items.labels(signal=signal, outcome="rejected").inc(result.rejected)
        if result.ignored:
            self.metrics.signal_items.labels(signal=signal, outcome="not_stored").inc(result.ignored)
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
        signal: str = "traces",
    ) -> IngestError:
        """A retryable refusal: counted (``spans`` items of ``signal``), and the error to raise."""
        if signal == "traces":
            self.metrics.spans_refused.labels(reason=reason).inc(spans)
            self.counts.add(source, project_id, refused=spans)
        else:
            self.metrics.signal_items.labels(signal=signal, outcome="refused").inc(spans)
        return IngestError(grpc_code, http_status, message, retry_after, reason)
