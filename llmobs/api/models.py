"""Request and response bodies of the REST API (they make its OpenAPI schema).

Request bodies refuse unknown fields, so a typo is an error rather than a silently ignored
filter. Responses of the hot paths are serialised from plain dicts straight to JSON; these
models describe them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from llmobs.store.queries import AGGREGATE_FUNCTIONS, FILTER_OPS, INTERVALS, MAX_QUERY_ROWS

Strict = ConfigDict(extra="forbid", populate_by_name=True)

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    """Times are ISO 8601 text, as the schema says: pydantic would also read a number as a Unix time."""
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("expected an ISO 8601 time, for example 2024-05-01T12:00:00Z")


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    instance: str = Field(description="host:pid of the process that answered (replicas differ)")


class Check(BaseModel):
    ok: bool
    detail: str
    latency_ms: float


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str
    checks: dict[str, Check]


class Message(BaseModel):
    """One LLM message (the OTel GenAI semconv message schema)."""

    model_config = ConfigDict(extra="allow")
    role: str
    parts: list[dict[str, Any]] = Field(
        description='Each {"type": "text", "content"}, {"type": "tool_call", "id", "name", "arguments"}, '
        '{"type": "tool_call_response", "id", "response"} or another {"type", ...}.'
    )
    finish_reason: str | None
    truncated: bool | None = Field(
        None, description="Present (true) when the content was cut to COLLECTOR_MAX_MESSAGE_CHARS."
    )


class Span(BaseModel):
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service_name: str
    environment: str | None
    scope_name: str | None
    name: str
    kind: str
    start_time: datetime
    end_time: datetime
    duration_ms: float
    status_code: str
    status_message: str | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    operation: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cached_input_tokens: int | None = Field(
        description="Cached (cache-read) input tokens; counted inside input_tokens as OpenTelemetry defines it."
    )
    reasoning_tokens: int | None
    cost_usd: float | None = Field(
        description="Cost in USD: sent by the client, or priced from the model "
        "price table; null when the model has no price."
    )
    cost_source: str | None
    session_id: str | None
    user_id: str | None
    finish_reasons: list[str] | None
    attributes: dict[str, Any]
    events: list[Any]
    links: list[Any] = Field(description="Linked spans: trace_id, span_id, attributes, trace_state when set.")
    resource: dict[str, Any]
    input_messages: list[Message] = Field(
        description="The messages sent to the model, from every instrumentation convention; empty when none."
    )
    output_messages: list[Message] = Field(description="The messages the model answered; empty when none.")
    time_to_first_token_ms: float | None = Field(
        description="Milliseconds from the span's start to the first streamed token; null when unknown."
    )
    ingested_at: datetime


class SpanNode(Span):
    children: list[SpanNode]


class Trace(BaseModel):
    trace_id: str
    start_time: datetime
    end_time: datetime
    duration_ms: float = Field(description="From the first span's start to the last span's end.")
    span_count: int
    error_count: int
    input_tokens: int | None = Field(description="Sum over the spans that report it; null when none does.")
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    services: list[str]
    models: list[str]
    truncated: bool = Field(description="True when the trace has more spans than one response carries.")
    roots: list[SpanNode] = Field(description="Spans without a parent in the trace, each with its subtree.")


class TraceSummary(BaseModel):
    trace_id: str
    root_span_id: str
    root_name: str
    service_name: str
    start_time: datetime
    end_time: datetime
    duration_ms: float = Field(description="Duration of the root span.")
    root_status_code: str
    span_count: int
    error_count: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    models: list[str]
    services: list[str]


class TraceList(BaseModel):
    traces: list[TraceSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last.")


Scalar = str | int | float | bool


class QueryFilter(BaseModel):
    model_config = Strict
    field: str = Field(
        max_length=250,
        description="A span field (`model`, `duration_ms`, ...) or `attributes.<key>` / `resource.<key>`.",
    )
    op: Literal[FILTER_OPS] = "eq"  # type: ignore[valid-type]
    value: Scalar | list[Scalar] | None = None


class QueryAggregate(BaseModel):
    model_config = Strict
    fn: Literal[AGGREGATE_FUNCTIONS]  # type: ignore[valid-type]
    field: str | None = Field(None, max_length=64)
    alias: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class QueryOrder(BaseModel):
    model_config = Strict
    key: str = Field(max_length=250)
    desc: bool = True


class QueryRequest(BaseModel):
    model_config = Strict
    from_: IsoDateTime | None = Field(None, alias="from", description="Start (inclusive); default: 24 h before `to`.")
    to: IsoDateTime | None = Field(None, description="End (exclusive); default: now.")
    filters: list[QueryFilter] = Field(default_factory=list, max_length=50)
    group_by: list[str] = Field(default_factory=list, max_length=10)
    aggregates: list[QueryAggregate] = Field(
        default_factory=lambda: [QueryAggregate(fn="count")], min_length=1, max_length=20
    )
    order_by: list[QueryOrder] = Field(default_factory=list, max_length=5)
    limit: int = Field(100, ge=1, le=MAX_QUERY_ROWS)
    bucket: Literal[tuple(INTERVALS)] | None = Field(  # type: ignore[valid-type]
        None, description="Adds a `time` group: spans bucketed by start time."
    )


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


class MetricPoint(BaseModel):
    time: datetime
    requests: int
    errors: int
    error_rate: float | None
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    latency_avg_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    time_to_first_token_avg_ms: float | None
    time_to_first_token_p50_ms: float | None
    time_to_first_token_p95_ms: float | None


class MetricSeries(BaseModel):
    group: str | None
    points: list[MetricPoint]


class ScorePoint(BaseModel):
    time: datetime
    count: int
    avg: float | None
    min: float | None
    max: float | None


class ScoreSeries(BaseModel):
    name: str
    points: list[ScorePoint]


class MetricsResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: datetime = Field(alias="from")
    to: datetime
    interval: str
    group_by: str
    source: str = Field(description="The rollup the series were read from.")
    series: list[MetricSeries]
    score_series: list[ScoreSeries] | None = Field(None, description="With `scores=true`: one series per score name.")


class TokenResult(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    expires_at: datetime
    project: str
    role: str


class AuditEntry(BaseModel):
    id: int
    at: datetime
    project: str | None
    actor: str
    action: str
    target: str | None
    source: str | None
    details: dict[str, Any]


class AuditList(BaseModel):
    entries: list[AuditEntry]


class IngestResult(BaseModel):
    accepted: int
    trace_ids: list[str]


class LogRecord(BaseModel):
    time: datetime = Field(description="The record's time, else its observed time, else when it was received.")
    observed_time: datetime | None
    trace_id: str | None
    span_id: str | None
    service_name: str
    scope_name: str | None
    severity_number: int | None
    severity_text: str | None
    event_name: str | None = Field(description="The event name (GenAI events: gen_ai.user.message, ...).")
    body: Any = Field(description="The OTLP body as JSON (string, number, object or list); null when none.")
    attributes: dict[str, Any]
    resource: dict[str, Any]
    ingested_at: datetime


class LogRecordList(BaseModel):
    log_records: list[LogRecord] = Field(description="In time order.")
    truncated: bool = Field(description="True when there are more records than one response carries.")


class SignalMetricPoint(BaseModel):
    time: datetime
    value: float | None = Field(None, description="Sums: the total over the interval; gauges: the average.")
    count: int | None = Field(None, description="Histograms: observations in the interval.")
    sum: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    bounds: list[float] | None = Field(None, description="Histograms: the explicit bucket bounds.")
    counts: list[int] | None = Field(None, description="Histograms: observations per bucket (one more than bounds).")


class SignalMetricSeries(BaseModel):
    group: str | None
    points: list[SignalMetricPoint]


class SignalMetricsResult(BaseModel):
    name: str
    unit: str | None
    kind: Literal["sum", "gauge", "histogram"] | None = Field(description="Null when no point is in the range.")
    interval: str
    series: list[SignalMetricSeries]


class ScoreIn(BaseModel):
    """A score of a trace: a number (``value``) or a category (``label``), or both."""

    model_config = Strict
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]*$", examples=["thumbs"])
    value: float | None = Field(None, allow_inf_nan=False, description="A numeric score (thumbs: 1 up, 0 down).")
    label: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[^\x00]*$", examples=["correct"])
    comment: str = Field("", max_length=2000, pattern=r"^[^\x00]*$")
    source: Literal["api", "ui", "eval", "human"] = "api"
    span_id: str | None = Field(None, pattern=r"^[0-9a-fA-F]{16}$", description="A span of the trace it is about.")


class Score(BaseModel):
    id: int
    trace_id: str
    span_id: str | None
    name: str
    value: float | None
    label: str | None
    comment: str
    source: str
    key_id: str | None = Field(description="The API key that recorded it.")
    created_at: datetime


class ScoreList(BaseModel):
    scores: list[Score]


class ProjectInfo(BaseModel):
    name: str
    created_at: datetime
    retention_days: int = Field(description="Days the project's spans are kept.")
    retention_days_source: Literal["project", "default"]
    rollup_retention_days: int | None = Field(description="Days its rollups are kept; null: forever.")
    rollup_retention_days_source: Literal["project", "default"]
    oldest_span: datetime | None = Field(description="Start time of the oldest span stored.")


class ProjectRetentionChange(BaseModel):
    """Fields left out keep their value; null makes the project follow the global default again."""

    model_config = Strict
    retention_days: int | None = Field(None, ge=1, le=36500)
    rollup_retention_days: int | None = Field(None, ge=1, le=36500)


class ErasureResult(BaseModel):
    subject: Literal["user", "session", "trace"]
    target: str = Field(description="How the audit log names the subject (user and session ids hashed).")
    dry_run: bool
    as_of: datetime = Field(description="Data stored up to this time was erased; later data stays.")
    traces: int
    rows: dict[str, int] = Field(description="Rows deleted per table (in a dry run: that would be).")
