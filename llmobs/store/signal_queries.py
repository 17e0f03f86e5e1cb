"""Read queries over OTLP log records and GenAI metric points, shared by the REST and GraphQL API.

As in :mod:`llmobs.store.queries`, every function takes an async connection whose transaction is
scoped to the caller's project and filters by ``project_id`` explicitly as well.

Metric series: the points of one metric in a time range, as deltas (``llmobs_metric_deltas`` in
``init-sql/0050``, which Grafana's panels read too), summed per interval and group. Histograms
give count, sum, average, min, max, p50/p95/p99 (interpolated within the explicit buckets) and
the summed buckets; sums give their total over the interval, gauges their average.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from llmobs.store.queries import AUTO_POINTS, INTERVALS, MAX_POINTS, QueryError, _fetchall, check_range

if TYPE_CHECKING:
    import psycopg

#: At most this many log records are returned for one trace or span (the answer says when cut).
MAX_LOG_RECORDS = 1000
#: At most this many data points are read for one series request.
MAX_METRIC_POINTS = 200_000

LOG_FIELDS: tuple[str, ...] = (
    "time",
    "observed_time",
    "trace_id",
    "span_id",
    "service_name",
    "scope_name",
    "severity_number",
    "severity_text",
    "event_name",
    "body",
    "attributes",
    "resource",
    "ingested_at",
)
_LOG_SELECT = ", ".join(LOG_FIELDS)


async def log_records(
    conn: psycopg.AsyncConnection,
    project_id: int,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    event_names: Collection[str] | None = None,
    limit: int = MAX_LOG_RECORDS,
) -> list[dict[str, Any]]:
    """Log records of a trace or of a span (one of the two ids), in time order, at most
    ``limit + 1`` (one more tells of truncation); only events named in ``event_names`` if given."""
    where = ["project_id = %s"]
    params: list[Any] = [project_id]
    if trace_id is not None:
        where.append("trace_id = %s")
        params.append(trace_id)
    if span_id is not None:
        where.append("span_id = %s")
        params.append(span_id)
    if trace_id is None and span_id is None:
        raise ValueError("a trace id or a span id is needed")
    if event_names is not None:
        where.append("event_name = ANY(%s)")
        params.append(list(event_names))
    params.append(limit + 1)
    return await _fetchall(
        conn,
        f"SELECT {_LOG_SELECT} FROM log_records WHERE {' AND '.join(where)} ORDER BY time, ingested_at LIMIT %s",
        params,
    )


# ---------------------------------------------------------------------------------------------
# GenAI metric series

SignalGroup = Literal["none", "model", "provider", "operation", "token_type", "service"]
SIGNAL_GROUPS: dict[str, str | None] = {
    "none": None,
    "model": "model",
    "provider": "provider",
    "operation": "operation",
    "token_type": "token_type",
    "service": "service_name",
}
_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # a Monday: weeks align too


@dataclass(frozen=True)
class SignalMetricsRequest:
    name: str
    start: datetime
    end: datetime
    interval: str = "auto"
    group_by: SignalGroup = "none"
    service: str | None = None
    model: str | None = None
    provider: str | None = None
    operation: str | None = None
    token_type: str | None = None

    def resolved_interval(self) -> str:
        """The interval to use: ``auto`` aims at about AUTO_POINTS points."""
        check_range(self.start, self.end)
        length = self.end - self.start
        if self.interval == "auto":
            return next((n for n, step in INTERVALS.items() if length / step <= AUTO_POINTS), "1d")
        if self.interval not in INTERVALS:
            raise QueryError(f"unknown interval {self.interval!r}; use auto or one of: {', '.join(INTERVALS)}")
        if length / INTERVALS[self.interval] > MAX_POINTS:
            raise QueryError(f"interval {self.interval} gives more than {MAX_POINTS} points: choose a longer one")
        return self.interval


async def signal_metric_series(
    conn: psycopg.AsyncConnection, project_id: int, req: SignalMetricsRequest
) -> dict[str, Any]:
    """``{"name", "unit", "kind", "interval", "series": [{"group", "points"}]}``; ``kind`` and
    ``unit`` are None when the metric has no points in the range."""
    interval = req.resolved_interval()
    group_col = SIGNAL_GROUPS[req.group_by]
    where = ["project_id = %(project)s"]
    params: dict[str, Any] = {
        "project": project_id,
        "name": req.name,
        "start": req.start,
        "end": req.end,
        "interval": INTERVALS[interval],
        "origin": _ORIGIN,
        "limit": MAX_METRIC_POINTS,
    }
    for column, attr in (
        ("service_name", "service"),
        ("model", "model"),
        ("provider", "provider"),
        ("operation", "operation"),
        ("token_type", "token_type"),
    ):
        value = getattr(req, attr)
        if value is not None:
            params[attr] = value
            where.append(f"{column} = %({attr})s")
    rows = await _fetchall(
        conn,
        f"""SELECT date_bin(%(interval)s, point_time, %(origin)s) AS time,
                   {group_col or "NULL::text"} AS grp, kind, unit, value, count, sum, min, max, bounds, counts
            FROM llmobs_metric_deltas(%(name)s, %(start)s, %(end)s)
            WHERE {" AND ".join(where)} ORDER BY 1, 2 LIMIT %(limit)s""",
        params,
    )
    kind = rows[0]["kind"] if rows else None
    unit = rows[0]["unit"] if rows else None
    return {"name": req.name, "unit": unit, "kind": kind, "interval": interval, "series": _signal_series(rows)}


def _signal_series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str | None, dict[datetime, list[dict[str, Any]]]] = {}
    for r in rows:
        groups.setdefault(r["grp"], {}).setdefault(r["time"], []).append(r)
    return [
        {"group": group, "points": [_point(at, points) for at, points in by_time.items()]}
        for group, by_time in groups.items()
    ]


def _point(at: datetime, rows: list[dict[str, Any]]) -> dict[str, Any]:
    kind = rows[0]["kind"]
    if kind == "sum":
        return {"time": at, "value": sum(r["value"] or 0 for r in rows)}
    if kind == "gauge":
        values = [r["value"] for r in rows if r["value"] is not None]
        return {"time": at, "value": sum(values) / len(values) if values else None}
    count = sum(r["count"] or 0 for r in rows)
    total = sum(r["sum"] or 0 for r in rows)
    lows = [r["min"] for r in rows if r["min"] is not None]
    highs = [r["max"] for r in rows if r["max"] is not None]
    bounds, counts = _merge_buckets(rows)
    low, high = (min(lows) if lows else None), (max(highs) if highs else None)
    p50, p95, p99 = (bucket_quantile(bounds, counts, q, low, high) for q in (0.5, 0.95, 0.99))
    return {
        "time": at,
        "count": count,
        "sum": total,
        "avg": total / count if count else None,
        "min": low,
        "max": high,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "bounds": bounds,
        "counts": counts,
    }


def _merge_buckets(rows: list[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """Bucket counts summed over the points that share the first point's bounds (an SDK uses one
    set of bounds per metric; points with others are left out of the buckets, not the count)."""
    bounds: list[float] = list(rows[0]["bounds"] or [])
    counts = [0] * (len(bounds) + 1)
    for r in rows:
        if list(r["bounds"] or []) == bounds and r["counts"] and len(r["counts"]) == len(counts):
            counts = [a + b for a, b in zip(counts, r["counts"], strict=True)]
    return bounds, counts


def bucket_quantile(
    bounds: Sequence[float], counts: Sequence[int], q: float, low: float | None = None, high: float | None = None
) -> float | None:
    """The q-quantile (0..1) of an explicit-bucket histogram, interpolated linearly within its
    bucket. Bucket i holds values in (bounds[i-1], bounds[i]]; the first bucket starts at ``low``
    (else 0), the last ends at ``high`` (else its lower bound). None for an empty histogram."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lower = bounds[i - 1] if i > 0 else min(low if low is not None else 0.0, bounds[0] if bounds else 0.0)
            upper = bounds[i] if i < len(bounds) else (high if high is not None else lower)
            if low is not None:
                lower = max(lower, low)
            if high is not None:
                upper = min(upper, high)
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return high
