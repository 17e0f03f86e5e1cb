"""The structured query compiler (POST /api/v1/query): a bad query is refused with a message
saying what to change; every value a caller sends is bound as a parameter, never spliced into
the SQL; output columns are named as documented. Trace cursors and latency histograms too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmobs.store.queries import (
    HIST_BUCKETS,
    Aggregate,
    Filter,
    Order,
    QueryError,
    SpanQuery,
    TraceCursor,
    compile_span_query,
    hist_quantiles,
)

START = datetime(2025, 1, 1, tzinfo=UTC)
END = START + timedelta(days=1)
HOSTILE = "x'); DROP TABLE spans; --"


def query(**fields: Any) -> SpanQuery:
    return SpanQuery(**({"start": START, "end": END} | fields))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filters": [Filter("colour", "eq", "red")]}, "unknown field 'colour'"),
        ({"filters": [Filter("service_name", "like", "a")]}, "unknown filter op 'like'"),
        ({"filters": [Filter("duration_ms", "contains", "1")]}, "needs a text field"),
        ({"filters": [Filter("service_name", "gt", "a")]}, "ordering comparisons need a numeric field"),
        ({"filters": [Filter("service_name", "in", [])]}, "list of 1 to 1000 items"),
        ({"filters": [Filter("attributes." + "k" * 201, "eq", 1)]}, "must be 1 to 200 characters"),
        ({"filters": [Filter("attributes.k", "eq", {"a": 1})]}, "must be a string, number or boolean"),
        ({"aggregates": [Aggregate("median", "duration_ms")]}, "unknown aggregate 'median'"),
        ({"aggregates": [Aggregate("sum")]}, "aggregate sum needs a field"),
        ({"aggregates": [Aggregate("sum", "service_name")]}, "unknown numeric field 'service_name'"),
        ({"aggregates": []}, "at least one aggregate"),
        ({"aggregates": [Aggregate("count"), Aggregate("count")]}, "appears twice"),
        ({"group_by": ["model", "model"]}, "group_by names 'model' twice"),
        ({"order_by": [Order("cost_usd")]}, "is not an output column"),
        ({"limit": 0}, "limit must be between 1 and 10000"),
        ({"bucket": timedelta(milliseconds=10)}, "at least one second"),
        ({"bucket": timedelta(seconds=1)}, "bucket is too small"),
        ({"end": START}, "from must be before to"),
        ({"start": START.replace(tzinfo=None)}, "need a time zone"),
    ],
)
def test_a_bad_query_says_what_to_change(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        compile_span_query(1, query(**fields))


@pytest.mark.parametrize(
    "bad_filter",
    [
        Filter("service_name", "eq", HOSTILE),
        Filter("service_name", "ne", HOSTILE),
        Filter("service_name", "contains", HOSTILE),
        Filter("service_name", "in", [HOSTILE, "ok"]),
        Filter(f"attributes.{HOSTILE}", "eq", HOSTILE),
        Filter(f"resource.{HOSTILE}", "exists"),
    ],
)
def test_values_and_keys_are_bound_never_spliced(bad_filter: Filter) -> None:
    sql, params, _ = compile_span_query(1, query(filters=[bad_filter]))
    assert HOSTILE not in sql and "DROP" not in sql
    assert any(HOSTILE in str(p) for p in params)
    assert sql.count("%s") == len(params)


@pytest.mark.parametrize(
    ("fields", "columns"),
    [
        ({}, ["count"]),
        ({"group_by": ["model"], "aggregates": [Aggregate("sum", "cost_usd")]}, ["model", "sum_cost_usd"]),
        ({"aggregates": [Aggregate("p95", "duration_ms", alias="slow")]}, ["slow"]),
        ({"bucket": timedelta(hours=1), "group_by": ["provider"]}, ["time", "provider", "count"]),
        ({"group_by": ["attributes.gen_ai.system"]}, ["attributes.gen_ai.system", "count"]),
    ],
)
def test_output_columns(fields: dict[str, Any], columns: list[str]) -> None:
    assert compile_span_query(1, query(**fields))[2] == columns


def test_the_project_scopes_every_query() -> None:
    sql, params, _ = compile_span_query(42, query())
    assert "project_id = %s" in sql and params[0] == 42


@pytest.mark.parametrize(
    ("cursor", "sort", "descending"),
    [
        (TraceCursor("start_time", True, START, "a" * 32), "start_time", True),
        (TraceCursor("duration_ms", False, 12.5, "b" * 32), "duration_ms", False),
        (TraceCursor("cost_usd", True, 0.0, "c" * 32), "cost_usd", True),
    ],
)
def test_a_cursor_round_trips(cursor: TraceCursor, sort: Any, descending: bool) -> None:
    assert TraceCursor.decode(cursor.encode(), sort, descending) == cursor


@pytest.mark.parametrize(
    ("text", "sort", "message"),
    [
        ("not base64 at all!", "start_time", "cursor is not valid"),
        (TraceCursor("duration_ms", True, 1.0, "t").encode(), "start_time", "another sort order"),
        (TraceCursor("duration_ms", True, "NaN", "t").encode(), "duration_ms", "cursor is not valid"),
        (TraceCursor("start_time", True, "yesterday", "t").encode(), "start_time", "cursor is not valid"),
        (TraceCursor("start_time", True, START, 7).encode(), "start_time", "cursor is not valid"),  # type: ignore[arg-type]
    ],
)
def test_a_tampered_cursor_is_refused(text: str, sort: Any, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        TraceCursor.decode(text, sort, True)


def one_bucket(i: int, count: int = 10) -> list[int]:
    hist = [0] * HIST_BUCKETS
    hist[i] = count
    return hist


@pytest.mark.parametrize(
    ("hist", "qs", "expected"),
    [
        (None, [0.5], [None]),
        ([0] * HIST_BUCKETS, [0.5, 0.99], [None, None]),
        (one_bucket(0), [0.5], [0.5]),  # underflow bucket: its bound
        (one_bucket(HIST_BUCKETS - 1), [0.99], [600000.0]),  # overflow bucket: its bound
    ],
)
def test_histogram_quantiles_at_the_edges(
    hist: list[int] | None, qs: list[float], expected: list[float | None]
) -> None:
    assert hist_quantiles(hist, qs) == expected


@pytest.mark.parametrize("bucket", [1, 10, 32, 64])
def test_a_quantile_lies_within_its_log_bucket(bucket: int) -> None:
    # bucket i (0-based, 1..64) spans 0.5 * r**(i-1) .. 0.5 * r**i ms, r = (600000 / 0.5) ** (1 / 64)
    ratio = (600000 / 0.5) ** (1 / 64)
    low, high = 0.5 * ratio ** (bucket - 1), 0.5 * ratio**bucket
    (median,) = hist_quantiles(one_bucket(bucket), [0.5])
    assert median is not None and low < median < high


def test_quantiles_follow_the_counts() -> None:
    hist = [0] * HIST_BUCKETS
    hist[10], hist[40] = 90, 10  # 90 % fast, 10 % slow
    p50, p95 = hist_quantiles(hist, [0.5, 0.95])
    assert p50 is not None and p95 is not None and p50 < p95
    assert hist_quantiles(hist, [0.9]) == [p50]  # the 90th sample is still a fast one
