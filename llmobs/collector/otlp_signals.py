"""OTLP log and metric requests in (protobuf and JSON), rows of ``log_records`` and
``metric_points`` out, and their export responses.

As for traces (:mod:`llmobs.collector.otlp`), decoding has two steps: parsing gives the item
count (log records, or data points of every metric) for the queue's admission check; conversion
to rows runs only for admitted requests. Log records are redacted like span content (key rules
on attributes, value detectors on attributes and body). Metrics: GenAI metrics (``gen_ai.*``)
are stored, as histograms (explicit buckets), sums and gauges; other metrics, and kinds not
stored (exponential histograms, summaries), are accepted and counted, never refused.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from llmobs.collector.otlp import (
    InvalidRequest,
    _get,
    _hex,
    _int,
    _json_attributes,
    _json_value,
    _list,
    _obj,
    _pb_attributes,
    _pb_value,
)
from llmobs.collector.pipeline import ns_to_datetime, to_json
from llmobs.collector.redact import Redactor
from llmobs.store.signals import LogRow, MetricRow

#: The times accepted: (earliest, latest), from the span window (llmobs.store.spans.SpanWindow).
Window = tuple[datetime, datetime]

#: Metric names stored as time series (the OTel GenAI semconv metrics all start with it).
GENAI_METRIC_PREFIX = "gen_ai."
TEMPORALITIES = ("unspecified", "delta", "cumulative")  # index = OTLP enum
_TEMPORALITY_NAMES = {
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": "unspecified",
    "AGGREGATION_TEMPORALITY_DELTA": "delta",
    "AGGREGATION_TEMPORALITY_CUMULATIVE": "cumulative",
}
_TRACE_ID_LENGTH, _SPAN_ID_LENGTH = 32, 16


@dataclass
class SignalResult:
    """What one request became: rows to write, items rejected (``partial_success``) and why,
    and metric data points accepted but not stored (not GenAI, or a kind not stored)."""

    rows: list[Any] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    ignored: int = 0

    @property
    def message(self) -> str:
        return "; ".join(self.errors[:10])


# ---------------------------------------------------------------------------------------------
# log records


@dataclass(slots=True)
class RawLog:
    time: int
    observed_time: int
    trace_id: str
    span_id: str
    severity_number: int
    severity_text: str
    event_name: str
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str | None


class LogsProtobufRequest:
    def __init__(self, body: bytes) -> None:
        self.message = _parse(ExportLogsServiceRequest, body)

    @property
    def item_count(self) -> int:
        return sum(len(sl.log_records) for rl in self.message.resource_logs for sl in rl.scope_logs)

    def raw(self) -> Iterator[RawLog]:
        for rl in self.message.resource_logs:
            resource = _pb_attributes(rl.resource.attributes)
            for sl in rl.scope_logs:
                scope = sl.scope.name or None
                for rec in sl.log_records:
                    yield RawLog(
                        rec.time_unix_nano,
                        rec.observed_time_unix_nano,
                        rec.trace_id.hex(),
                        rec.span_id.hex(),
                        rec.severity_number,
                        rec.severity_text,
                        rec.event_name,
                        _pb_value(rec.body) if rec.HasField("body") else None,
                        _pb_attributes(rec.attributes),
                        resource,
                        scope,
                    )

    def rows(self, project_id: int, redactor: Redactor, window: Window | None = None) -> SignalResult:
        return log_rows(self.raw(), project_id, redactor, window)


class LogsJsonRequest:
    def __init__(self, body: bytes) -> None:
        self.resource_logs = _json_top(body, "resourceLogs", "resource_logs")

    @property
    def item_count(self) -> int:
        return sum(len(_list(_get(_obj(sl), "logRecords", "log_records"), "logRecords")) for _, sl in self._scopes())

    def _scopes(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for rl in map(_obj, self.resource_logs):
            for sl in _list(_get(rl, "scopeLogs", "scope_logs"), "scopeLogs"):
                yield rl, _obj(sl)

    def raw(self) -> Iterator[RawLog]:
        for rl, sl in self._scopes():
            resource = _json_attributes(_get(_obj(_get(rl, "resource") or {}), "attributes"))
            scope = _obj(_get(sl, "scope") or {}).get("name")
            for rec in map(_obj, _list(_get(sl, "logRecords", "log_records"), "logRecords")):
                severity = _get(rec, "severityNumber", "severity_number")
                yield RawLog(
                    _int(_get(rec, "timeUnixNano", "time_unix_nano")),
                    _int(_get(rec, "observedTimeUnixNano", "observed_time_unix_nano")),
                    _hex(_get(rec, "traceId", "trace_id")),
                    _hex(_get(rec, "spanId", "span_id")),
                    severity if isinstance(severity, int) and not isinstance(severity, bool) else 0,
                    _text(_get(rec, "severityText", "severity_text")),
                    _text(_get(rec, "eventName", "event_name")),
                    _json_value(_get(rec, "body")),
                    _json_attributes(_get(rec, "attributes")),
                    resource,
                    scope if isinstance(scope, str) and scope else None,
                )

    def rows(self, project_id: int, redactor: Redactor, window: Window | None = None) -> SignalResult:
        return log_rows(self.raw(), project_id, redactor, window)


def outside(when: datetime, window: Window | None) -> str | None:
    """Why ``when`` is refused, when it lies outside ``window`` (earliest, latest): the span time
    window (COLLECTOR_MAX_SPAN_AGE_DAYS, COLLECTOR_MAX_SPAN_FUTURE_MINUTES) holds for every
    signal, as only its days have partitions."""
    if window is None or window[0] <= when <= window[1]:
        return None
    return (
        f"time {when:%Y-%m-%d %H:%M:%S} UTC is outside the accepted window "
        f"{window[0]:%Y-%m-%d %H:%M} to {window[1]:%Y-%m-%d %H:%M} UTC"
    )


def log_rows(
    records: Iterator[RawLog], project_id: int, redactor: Redactor, window: Window | None = None
) -> SignalResult:
    """Validate and redact log records into rows; a record with a malformed trace or span id, or
    a time outside ``window``, is rejected (counted, with a reason), never raised.

    Redaction as for spans: key rules on every record's attributes, value detectors on the
    records the detectors' trigger flags in one pass (attributes and body), resources once each.
    """
    result = SignalResult()
    received = time.time_ns()
    resources: dict[int, tuple[str, str]] = {}
    kept: list[RawLog] = []
    for rec in records:
        problem = _check_log_ids(rec)
        if problem is not None:
            result.rejected += 1
            result.errors.append(f"log record rejected: {problem}")
            continue
        try:
            when = ns_to_datetime(rec.time or rec.observed_time or received)
            observed = ns_to_datetime(rec.observed_time) if rec.observed_time else None
        except OverflowError:
            result.rejected += 1
            result.errors.append("log record rejected: time out of range")
            continue
        problem = outside(when, window)
        if problem is not None:
            result.rejected += 1
            result.errors.append(f"log record rejected: {problem}")
            continue
        resource = resources.get(id(rec.resource))
        if resource is None:
            resource = resources[id(rec.resource)] = _log_resource(rec.resource, redactor)
        attrs = rec.attributes
        event = rec.event_name or attrs.get("event.name")
        redactor.apply_keys(attrs)
        kept.append(rec)
        result.rows.append(
            LogRow(
                project_id,
                when,
                observed,
                rec.trace_id or None,
                rec.span_id or None,
                resource[0],
                rec.scope_name,
                rec.severity_number or None,
                rec.severity_text or None,
                event if isinstance(event, str) and event else None,
                None if rec.body is None else to_json(rec.body),
                to_json(attrs),
                resource[1],
            )
        )
    rows = result.rows
    if redactor.scans and rows:
        # Every column comes from these texts: the columns taken from the record are scrubbed with them.
        texts = [
            f"{r.attributes}\n{r.body or ''}\n{r.scope_name or ''}\n{r.severity_text or ''}\n{r.event_name or ''}"
            for r in rows
        ]
        for i in redactor.triggered(texts):
            rec = kept[i]
            body = None if rec.body is None else redactor.scrub_values({"body": rec.body})["body"]
            rows[i] = rows[i]._replace(
                attributes=to_json(redactor.scrub_values(rec.attributes)),
                body=None if body is None else to_json(body),
                **redactor.scrub_columns(rows[i], _LOG_SCRUBBED_COLUMNS),
            )
    return result


#: Text columns of a log record taken from client data that the value detectors scrub.
_LOG_SCRUBBED_COLUMNS = ("scope_name", "severity_text", "event_name")


def _log_resource(resource: dict[str, Any], redactor: Redactor) -> tuple[str, str]:
    """(service name, resource JSON) of a redacted resource."""
    if redactor.active:
        redactor.attributes(resource)
    service = resource.get("service.name")
    service = service if isinstance(service, str) and service else "unknown"
    return (redactor.scrub(service) if redactor.active else service), to_json(resource)


def _check_log_ids(rec: RawLog) -> str | None:
    """Ids are optional on a log record, but when present they must be well formed."""
    if rec.trace_id.strip("0") == "":
        rec.trace_id = ""
    if rec.span_id.strip("0") == "":
        rec.span_id = ""
    if rec.trace_id and (len(rec.trace_id) != _TRACE_ID_LENGTH or not _is_hex(rec.trace_id)):
        return "trace id must be 32 hex characters"
    if rec.span_id and (len(rec.span_id) != _SPAN_ID_LENGTH or not _is_hex(rec.span_id)):
        return "span id must be 16 hex characters"
    return None


_HEX = re.compile(r"[0-9a-f]*")


def _is_hex(text: str) -> bool:
    return _HEX.fullmatch(text) is not None


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass(slots=True)
class RawPoint:
    name: str
    unit: str
    kind: str
    temporality: str
    time: int
    start_time: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float | None = None
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bounds: list[float] | None = None
    counts: list[int] | None = None


class MetricsProtobufRequest:
    def __init__(self, body: bytes) -> None:
        self.message = _parse(ExportMetricsServiceRequest, body)

    @property
    def item_count(self) -> int:
        count = 0
        for rm in self.message.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    count += len(getattr(metric, kind).data_points) if kind else 0
        return count

    def raw(self, result: SignalResult) -> Iterator[RawPoint]:
        for rm in self.message.resource_metrics:
            resource = _pb_attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    data = getattr(metric, kind)
                    if not metric.name.startswith(GENAI_METRIC_PREFIX) or kind not in ("sum", "gauge", "histogram"):
                        result.ignored += len(data.data_points)
                        continue
                    temporality = TEMPORALITIES[data.aggregation_temporality] if kind != "gauge" else "unspecified"
                    for dp in data.data_points:
                        point = RawPoint(
                            metric.name,
                            metric.unit,
                            kind,
                            temporality,
                            dp.time_unix_nano,
                            dp.start_time_unix_nano,
                            _pb_attributes(dp.attributes),
                            resource,
                        )
                        if kind == "histogram":
                            point.count, point.sum = dp.count, dp.sum if dp.HasField("sum") else None
                            point.min = dp.min if dp.HasField("min") else None
                            point.max = dp.max if dp.HasField("max") else None
                            point.bounds, point.counts = list(dp.explicit_bounds), list(dp.bucket_counts)
                        else:
                            point.value = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                        yield point

    def rows(self, project_id: int, redactor: Redactor, window: Window | None = None) -> SignalResult:
        result = SignalResult()
        metric_rows(self.raw(result), project_id, redactor, result, window)
        return result


class MetricsJsonRequest:
    def __init__(self, body: bytes) -> None:
        self.resource_metrics = _json_top(body, "resourceMetrics", "resource_metrics")

    def _metrics(self) -> Iterator[tuple[dict[str, Any], dict[str, Any], str | None, dict[str, Any]]]:
        """(resource metrics, metric, kind, data) of every metric of the request."""
        for rm in map(_obj, self.resource_metrics):
            for sm in map(_obj, _list(_get(rm, "scopeMetrics", "scope_metrics"), "scopeMetrics")):
                for metric in map(_obj, _list(_get(sm, "metrics"), "metrics")):
                    kind = next((k for k in _JSON_KINDS if k in metric), None)
                    yield rm, metric, _JSON_KINDS.get(kind or ""), _obj(metric[kind]) if kind else {}

    @property
    def item_count(self) -> int:
        return sum(
            len(_list(_get(data, "dataPoints", "data_points"), "dataPoints")) for _, _, _, data in self._metrics()
        )

    def raw(self, result: SignalResult) -> Iterator[RawPoint]:
        for rm, metric, kind, data in self._metrics():
            points = list(map(_obj, _list(_get(data, "dataPoints", "data_points"), "dataPoints")))
            name = _text(_get(metric, "name"))
            if not name.startswith(GENAI_METRIC_PREFIX) or kind not in ("sum", "gauge", "histogram"):
                result.ignored += len(points)
                continue
            resource = _json_attributes(_get(_obj(_get(rm, "resource") or {}), "attributes"))
            temporality = "unspecified"
            if kind != "gauge":
                raw_temporality = _get(data, "aggregationTemporality", "aggregation_temporality")
                if isinstance(raw_temporality, int) and 0 <= raw_temporality < len(TEMPORALITIES):
                    temporality = TEMPORALITIES[raw_temporality]
                elif isinstance(raw_temporality, str):
                    temporality = _TEMPORALITY_NAMES.get(raw_temporality, "unspecified")
            for dp in points:
                point = RawPoint(
                    name,
                    _text(_get(metric, "unit")),
                    kind,
                    temporality,
                    _int(_get(dp, "timeUnixNano", "time_unix_nano")),
                    _int(_get(dp, "startTimeUnixNano", "start_time_unix_nano")),
                    _json_attributes(_get(dp, "attributes")),
                    resource,
                )
                if kind == "histogram":
                    point.count = _int(_get(dp, "count"))
                    point.sum, point.min, point.max = (_number(_get(dp, k)) for k in ("sum", "min", "max"))
                    bounds = _list(_get(dp, "explicitBounds", "explicit_bounds"), "explicitBounds")
                    point.bounds = [b for b in map(_number, bounds) if b is not None]
                    point.counts = [_int(c) for c in _list(_get(dp, "bucketCounts", "bucket_counts"), "bucketCounts")]
                else:
                    point.value = _number(_get(dp, "asDouble", "as_double"))
                    if point.value is None:
                        point.value = _number(_int(_get(dp, "asInt", "as_int")))
                yield point

    def rows(self, project_id: int, redactor: Redactor, window: Window | None = None) -> SignalResult:
        result = SignalResult()
        metric_rows(self.raw(result), project_id, redactor, result, window)
        return result


_JSON_KINDS = {"sum": "sum", "gauge": "gauge", "histogram": "histogram", "exponentialHistogram": "other"}
_JSON_KINDS |= {"exponential_histogram": "other", "summary": "other"}


def metric_rows(
    points: Iterator[RawPoint],
    project_id: int,
    redactor: Redactor,
    result: SignalResult,
    window: Window | None = None,
) -> None:
    """Append the rows of GenAI data points to ``result``; a point without a time or with one
    outside ``window``, or a histogram whose bucket counts do not fit its bounds, is rejected
    (counted, with a reason)."""
    received = time.time_ns()
    for p in points:
        if p.kind == "histogram" and p.counts and len(p.counts) != len(p.bounds or ()) + 1:
            result.rejected += 1
            result.errors.append(f"{p.name}: a histogram needs one more bucket count than bounds")
            continue
        try:
            when = ns_to_datetime(p.time or received)
            started = ns_to_datetime(p.start_time) if p.start_time else None
        except OverflowError:
            result.rejected += 1
            result.errors.append(f"{p.name}: time out of range")
            continue
        problem = outside(when, window)
        if problem is not None:
            result.rejected += 1
            result.errors.append(f"{p.name}: {problem}")
            continue
        attrs, resource = p.attributes, p.resource
        if redactor.active:
            redactor.attributes(attrs)
        service = resource.get("service.name")
        service = service if isinstance(service, str) and service else "unknown"
        attributes = to_json(attrs)
        identity = f"{p.name}\x00{service}\x00{attributes}\x00{p.start_time}\x00{to_json(resource)}"
        result.rows.append(
            MetricRow(
                project_id,
                when,
                started,
                p.name,
                p.unit or None,
                p.kind,
                p.temporality,
                service,
                _attr(attrs, "gen_ai.provider.name", "gen_ai.system"),
                _attr(attrs, "gen_ai.response.model", "gen_ai.request.model"),
                _attr(attrs, "gen_ai.operation.name"),
                _attr(attrs, "gen_ai.token.type"),
                hashlib.blake2b(identity.encode(), digest_size=12).hexdigest(),
                p.value,
                p.count,  # hist_count
                p.sum,
                p.min,
                p.max,
                p.bounds if p.kind == "histogram" else None,
                p.counts if p.kind == "histogram" else None,
                attributes,
            )
        )


def _attr(attrs: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# shared


def _parse(message_type: Any, body: bytes) -> Any:
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"malformed protobuf: {exc}") from None
    except RecursionError:
        raise InvalidRequest("malformed protobuf: nested too deeply") from None


def _json_top(body: bytes, camel: str, snake: str) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("invalid OTLP JSON: the body must be an object")
    return _list(_get(data, camel, snake), camel)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def export_response(signal: str, rejected: int, message: str, *, json: bool) -> bytes:
    """An ExportLogsServiceResponse or ExportMetricsServiceResponse; ``partial_success`` only
    when items were rejected or a warning is due."""
    field_name = "rejected_log_records" if signal == "logs" else "rejected_data_points"
    if json:
        if not rejected and not message:
            return b"{}"
        camel = "rejectedLogRecords" if signal == "logs" else "rejectedDataPoints"
        return orjson.dumps({"partialSuccess": {camel: str(rejected), "errorMessage": message}})
    response = ExportLogsServiceResponse() if signal == "logs" else ExportMetricsServiceResponse()
    if rejected or message:
        setattr(response.partial_success, field_name, rejected)
        response.partial_success.error_message = message
    return response.SerializeToString()
