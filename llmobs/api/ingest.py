"""``POST /api/v1/spans``: JSON spans through the collector's pipeline into ``spans``.

The API does not normalize, price or redact anything itself: it turns the request into the
collector's :class:`~llmobs.collector.pipeline.RawSpan` objects, lets
:class:`~llmobs.collector.pipeline.SpanPipeline` make the rows, and writes them with the
collector's COPY (:func:`llmobs.store.spans.acopy_spans`). After the commit it announces the
traces on Redis with the collector's messages (:func:`llmobs.collector.publish.trace_messages`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, Field

from llmobs.api.errors import ApiError
from llmobs.api.models import IsoDateTime, Strict
from llmobs.api.redis_link import RedisUnavailable
from llmobs.collector.pipeline import RawSpan, SpanPipeline, span_link
from llmobs.collector.publish import trace_messages
from llmobs.store import ingest_stats
from llmobs.store.spans import MISSING_PARTITION_MESSAGE, SpanRow, acopy_spans, is_missing_partition

if TYPE_CHECKING:
    from llmobs.api.db import Database
    from llmobs.api.redis_link import RedisLink
    from llmobs.config import Settings

log = logging.getLogger("llmobs.api.ingest")

#: Spans one request may carry.
MAX_SPANS = 1000
#: Seconds between reloads of the model price table.
PRICE_REFRESH = 60.0

_HEX32 = r"^[0-9a-fA-F]{32}$"
_HEX16 = r"^[0-9a-fA-F]{16}$"


class SpanEventIn(BaseModel):
    model_config = Strict
    name: str = Field(max_length=1000)
    time: IsoDateTime | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class SpanLinkIn(BaseModel):
    model_config = Strict
    trace_id: str = Field(pattern=_HEX32, description="The linked span's trace: 32 hex characters.")
    span_id: str = Field(pattern=_HEX16, description="The linked span: 16 hex characters.")
    trace_state: str | None = Field(None, max_length=1000)
    attributes: dict[str, Any] = Field(default_factory=dict)

    def raw(self) -> dict[str, Any]:
        return span_link(self.trace_id.lower(), self.span_id.lower(), self.trace_state, dict(self.attributes))


class SpanIn(BaseModel):
    """A span as JSON. Attribute names follow any of the conventions the collector knows (OTel
    GenAI, OpenInference, OpenLLMetry, OpenLIT): model, tokens and cost are read from them."""

    model_config = Strict
    trace_id: str = Field(pattern=_HEX32, description="32 hex characters.")
    span_id: str = Field(pattern=_HEX16, description="16 hex characters.")
    parent_span_id: str | None = Field(None, pattern=_HEX16)
    name: str = Field(max_length=1000)
    kind: Literal["internal", "server", "client", "producer", "consumer"] = "internal"
    start_time: IsoDateTime = Field(description="Naive times are UTC.")
    end_time: IsoDateTime | None = Field(None, description="Default: the start time.")
    status_code: Literal["unset", "ok", "error"] = "unset"
    status_message: str | None = Field(None, max_length=10_000)
    service_name: str | None = Field(None, max_length=500, description="Sets the resource's service.name.")
    scope_name: str | None = Field(None, max_length=500)
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[SpanEventIn] = Field(default_factory=list, max_length=1000)
    links: list[SpanLinkIn] = Field(
        default_factory=list, max_length=1000, description="Spans this one is linked to (OpenTelemetry span links)."
    )
    resource: dict[str, Any] = Field(default_factory=dict)

    def raw(self) -> RawSpan:
        """The span for the pipeline (which checks its start lies in the accepted window)."""
        resource = dict(self.resource)
        if self.service_name:
            resource["service.name"] = self.service_name
        start = _utc(self.start_time)
        return RawSpan(
            trace_id=self.trace_id.lower(),
            span_id=self.span_id.lower(),
            parent_span_id=self.parent_span_id.lower() if self.parent_span_id else None,
            name=self.name,
            start_time=start,
            end_time=_utc(self.end_time or self.start_time),
            kind=self.kind,
            status_code=self.status_code,
            status_message=self.status_message,
            attributes=dict(self.attributes),
            events=[
                {"name": e.name, "time": _utc(e.time) if e.time else None, "attributes": dict(e.attributes)}
                for e in self.events
            ],
            resource=resource,
            scope_name=self.scope_name,
            links=[link.raw() for link in self.links],
        )


def _utc(value: datetime) -> datetime:
    """In UTC (the pipeline's rows and the daily partitions are UTC); naive means UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "invalid_span", f"time {value.isoformat()} is out of range") from None


class SpanIngest:
    def __init__(self, settings: Settings, db: Database, redis: RedisLink) -> None:
        self.pipeline = SpanPipeline.from_settings(settings)
        self.db = db
        self.redis = redis
        self._prices_loaded = float("-inf")

    async def _refresh_prices(self) -> None:
        if time.monotonic() - self._prices_loaded < PRICE_REFRESH:
            return
        async with self.db.control() as conn:
            await self.pipeline.aload_prices(conn)
        self._prices_loaded = time.monotonic()

    async def write(self, spans: list[SpanIn], project_id: int) -> list[SpanRow]:
        """Store ``spans`` for ``project_id``: all of them or, if any is invalid, none."""
        if not spans:
            raise ApiError(422, "no_spans", "the request holds no spans")
        if len(spans) > MAX_SPANS:
            raise ApiError(
                413, "too_many_spans", f"at most {MAX_SPANS} spans per request; send {len(spans)} in several requests"
            )
        raw = [s.raw() for s in spans]
        await self._refresh_prices()
        result = self.pipeline.process(raw, project_id=project_id)
        if result.rejected:
            async with self.db.control() as conn:
                await ingest_stats.acount(conn, "api", project_id, rejected=len(spans))
            raise ApiError(
                422, "invalid_span", f"{result.rejected} span(s) rejected, none stored: {'; '.join(result.errors)}"
            )
        try:
            await self._copy(result.rows, project_id)
        except Exception as exc:
            if not is_missing_partition(exc):
                raise
            raise ApiError(503, "partition_missing", MISSING_PARTITION_MESSAGE, headers={"Retry-After": "60"}) from None
        await self._announce(result.rows)
        return result.rows

    async def _copy(self, rows: list[SpanRow], project_id: int) -> None:
        async with self.db.write_spans() as conn:
            await acopy_spans(conn, rows)
            await ingest_stats.acount(conn, "api", project_id, accepted=len(rows))

    async def _announce(self, rows: list[SpanRow]) -> None:
        async def publish(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for channel, messages in trace_messages(rows).items():
                    for message in messages:
                        pipe.publish(channel, orjson.dumps(message))
                await pipe.execute()

        try:
            await self.redis.run(publish)
        except RedisUnavailable:
            log.info("new traces not announced: redis unavailable")
