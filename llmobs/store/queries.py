"""Read queries over spans and rollups, shared by the REST and the GraphQL API.

Every function takes an async connection whose transaction is already scoped to the caller's
project (row-level security, see ``init-sql/0020``) and filters by ``project_id`` explicitly as
well: a row comes back only when both agree. Values are always bound parameters; identifiers come
only from the fixed field tables of this module, never from the request.

Traces are listed by their root span (the span without a parent): its start time places the
trace in a time range and orders the list; the other columns of a listed trace (span count,
tokens, cost, errors, models) aggregate all spans of the trace that start within
:data:`TRACE_WINDOW` after the root.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Literal

from llmobs.store.span_fields import field_names

if TYPE_CHECKING:
    import psycopg

#: Columns returned for a span, in this order (the REST surface of the one list of span fields).
SPAN_FIELDS: tuple[str, ...] = field_names("rest")
#: Messages are NULL in the table when a span has none; every read path serves an empty list.
_SPAN_EXPRESSIONS = {
    "input_messages": "COALESCE(input_messages, '[]') AS input_messages",
    "output_messages": "COALESCE(output_messages, '[]') AS output_messages",
}
_SPAN_SELECT = ", ".join(_SPAN_EXPRESSIONS.get(f, f) for f in SPAN_FIELDS)

#: A trace with more spans than this is returned truncated (and says so).
MAX_TRACE_SPANS = 10_000
#: Spans of a listed trace are looked up this long after its root started (keeps the lookup to
#: one or two daily partitions).
TRACE_WINDOW = timedelta(days=1)
#: Latency histograms have this many buckets (see llmobs_latency_bucket in 0001_core.sql).
HIST_BUCKETS = 66


class QueryError(ValueError):
    """A request that cannot run as asked; the message tells the caller what to change."""


async def _fetchall(conn: psycopg.AsyncConnection, sql: str, params: Any) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


# ---------------------------------------------------------------------------------------------
# spans and traces


async def get_span(conn: psycopg.AsyncConnection, project_id: int, span_id: str) -> dict[str, Any] | None:
    rows = await _fetchall(
        conn,
        f"SELECT {_SPAN_SELECT} FROM spans WHERE project_id = %s AND span_id = %s ORDER BY start_time LIMIT 1",
        (project_id, span_id),
    )
    return rows[0] if rows else None


async def get_trace_spans(
    conn: psycopg.AsyncConnection, project_id: int, trace_id: str, limit: int = MAX_TRACE_SPANS
) -> list[dict[str, Any]]:
    """The trace's spans in start order, at most ``limit + 1`` (one more tells of truncation)."""
    return await _fetchall(
        conn,
        f"SELECT {_SPAN_SELECT} FROM spans WHERE project_id = %s AND trace_id = %s "
        "ORDER BY start_time, span_id LIMIT %s",
        (project_id, trace_id, limit + 1),
    )


TraceSort = Literal["start_time", "duration_ms", "cost_usd"]
TRACE_SORTS: tuple[TraceSort, ...] = ("start_time", "duration_ms", "cost_usd")


@dataclass(frozen=True)
class TraceFilter:
    """Which traces to list. Span filters (service ... session) match when any span of the trace
    matches; ``status`` "error" means some span failed, "ok" that none did."""

    start: datetime
    end: datetime
    service: str | None = None
    model: str | None = None
    provider: str | None = None
    status: Literal["ok", "error"] | None = None
    user_id: str | None = None
    session_id: str | None = None
    name: str | None = None
    min_duration_ms: float | None = None
    min_cost_usd: float | None = None
    #: full-text search over the messages of the trace's spans (websearch syntax: words, "a phrase",
    #: -word, or); spans are searchable from the maintenance pass after they were written
    q: str | None = None
    #: Some score of the trace has this name (and, when given, this label and a value in range).
    score_name: str | None = None
    score_label: str | None = None
    min_score: float | None = None
    max_score: float | None = None

    def __post_init__(self) -> None:
        check_range(self.start, self.end)
        if self.score_name is None and (
            self.score_label is not None or self.min_score is not None or self.max_score is not None
        ):
            raise QueryError("score_label, min_score and max_score need score_name")


@dataclass(frozen=True)
class TraceCursor:
    """Where the previous page ended: the sort value and trace id of its last trace."""

    sort: TraceSort
    descending: bool
    value: Any
    trace_id: str

    def encode(self) -> str:
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        raw = json.dumps([self.sort, self.descending, value, self.trace_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: TraceSort, descending: bool) -> TraceCursor:
        invalid = QueryError("cursor is not valid: pass the next_cursor of the previous page unchanged")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            c_sort, c_desc, value, trace_id = json.loads(raw)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise invalid from None
        if (c_sort, c_desc) != (sort, descending):
            raise QueryError("cursor belongs to another sort order: keep sort and order the same while paging")
        try:
            value = datetime.fromisoformat(value) if sort == "start_time" else float(value)
        except (ValueError, TypeError):
            raise invalid from None
        if not isinstance(trace_id, str) or (isinstance(value, float) and not math.isfinite(value)):
            raise invalid
        return cls(sort, descending, value, trace_id)


@dataclass
class TracePage:
    traces: list[dict[str, Any]]
    next_cursor: str | None


_MODEL = "COALESCE(s.response_model, s.request_model)"

# Aggregates over the spans ``s`` of one trace: shared by both listing strategies.
_TRACE_AGGREGATES = f"""
    count(*) AS span_count,
    count(*) FILTER (WHERE s.status_code = 'error') AS error_count,
    sum(s.input_tokens)::bigint AS input_tokens,
    sum(s.output_tokens)::bigint AS output_tokens,
    sum(s.total_tokens)::bigint AS total_tokens,
    sum(s.cost_usd) AS cost_usd,
    COALESCE(array_agg(DISTINCT {_MODEL}) FILTER (WHERE {_MODEL} IS NOT NULL), '{{}}') AS models,
    array_agg(DISTINCT s.service_name) AS services"""

# Span filters: TraceFilter attribute, and the test over the spans ``s`` of one trace.
_SPAN_FILTERS: tuple[tuple[str, str], ...] = (
    ("service", "bool_or(s.service_name = %(service)s)"),
    ("model", f"bool_or({_MODEL} = %(model)s OR s.request_model = %(model)s)"),
    ("provider", "bool_or(s.provider = %(provider)s)"),
    ("user_id", "bool_or(s.user_id = %(user_id)s)"),
    ("session_id", "bool_or(s.session_id = %(session_id)s)"),
)

_SUMMARY_COLUMNS = """r.trace_id, r.span_id AS root_span_id, r.name AS root_name, r.service_name,
    r.start_time, r.end_time, r.duration_ms, r.status_code AS root_status_code, a.span_count, a.error_count,
    a.input_tokens, a.output_tokens, a.total_tokens, a.cost_usd, a.models, a.services"""

#: A span ``m`` whose messages match ``%(q)s`` (websearch syntax), through the partial GIN index
#: on ``message_words`` (0031), which ``llmobs db maintain`` fills.
MESSAGE_MATCH = "m.message_words IS NOT NULL AND m.message_words @@ websearch_to_tsquery('simple', %(q)s)"
#: A GenAI log record (OTLP logs) whose messages match ``%(q)s``: the expression and predicate of
#: the partial GIN index ``log_records_messages_tsv_idx`` (0051_log_record_search.sql).
LOG_MESSAGE_MATCH = (
    "l.event_name IS NOT NULL AND l.trace_id IS NOT NULL AND "
    "llmobs_log_messages_tsv(l.body, l.attributes) @@ websearch_to_tsquery('simple', %(q)s)"
)
#: Traces (``{alias}.trace_id``) with a span, or a GenAI log record, in the listed range whose
#: messages match ``%(q)s``.
_TRACES_MATCHING = f"""{{alias}}.trace_id IN (
    SELECT m.trace_id FROM spans m
    WHERE m.project_id = %(project)s AND m.start_time >= %(start)s - interval '1 hour'
      AND m.start_time < %(end)s + %(window)s AND {MESSAGE_MATCH}
    UNION ALL
    SELECT l.trace_id FROM log_records l
    WHERE l.project_id = %(project)s AND l.time >= %(start)s - interval '1 hour'
      AND l.time < %(end)s + %(window)s AND {LOG_MESSAGE_MATCH})"""

#: Roots (at least, and four per row asked for) the root-index strategy examines before a filtered
#: page falls back to the aggregate one.
PROBE_ROOTS = 500


def _lateral(extra: list[str]) -> str:
    """The summary aggregates of one listed trace ``r`` (plus ``extra`` columns): its spans
    starting within TRACE_WINDOW, found in one or two daily partitions by (project_id, trace_id)."""
    return f"""CROSS JOIN LATERAL (
        SELECT {", ".join([_TRACE_AGGREGATES, *extra])}
        FROM spans s
        WHERE s.project_id = r.project_id AND s.trace_id = r.trace_id
          AND s.start_time >= r.start_time - interval '1 hour' AND s.start_time < r.start_time + %(window)s
    ) a"""


def _score_term(trace: str) -> str:
    """The trace ``trace`` (a column) has a score matching the filter's score_* parameters."""
    return f"""EXISTS (SELECT 1 FROM scores sc WHERE sc.project_id = %(project)s AND sc.trace_id = {trace}
        AND sc.name = %(score_name)s AND (%(score_label)s::text IS NULL OR sc.label = %(score_label)s)
        AND (%(min_score)s::float8 IS NULL OR sc.value >= %(min_score)s)
        AND (%(max_score)s::float8 IS NULL OR sc.value <= %(max_score)s))"""


def _trace_filters(f: TraceFilter) -> tuple[list[str], list[str]]:
    """Filters over all spans of a trace: lateral columns, and the terms testing them."""
    columns = [f"{expr} AS f_{attr}" for attr, expr in _SPAN_FILTERS if getattr(f, attr) is not None]
    terms = [f"a.f_{attr}" for attr, _ in _SPAN_FILTERS if getattr(f, attr) is not None]
    if f.status == "error":
        terms.append("a.error_count > 0")
    elif f.status == "ok":
        terms.append("a.error_count = 0")
    if f.min_cost_usd is not None:
        terms.append("a.cost_usd >= %(min_cost)s")
    if f.score_name is not None:
        terms.append(_score_term("r.trace_id"))
    return columns, terms


def _page_by_root(
    f: TraceFilter, sort: TraceSort, direction: str, cursor: TraceCursor | None, params: dict[str, Any]
) -> str:
    """Walk the root index in order and aggregate only the traces looked at: the page itself, or
    with filters over all spans, the first ``%(probe)s`` candidates (``candidates`` tells how many
    there were: fewer means none was left out)."""
    key = {"start_time": "r.start_time", "duration_ms": "r.duration_ms"}[sort]
    terms = [
        "r.project_id = %(project)s",
        "r.parent_span_id IS NULL",
        "r.start_time >= %(start)s",
        "r.start_time < %(end)s",
    ]
    if f.name is not None:
        terms.append("r.name = %(name)s")
    if f.min_duration_ms is not None:
        terms.append("r.duration_ms >= %(min_duration)s")
    if f.q is not None:
        terms.append(_TRACES_MATCHING.format(alias="r"))
    if cursor is not None:
        terms.append(f"({key}, r.trace_id) {'<' if direction == 'DESC' else '>'} (%(c_value)s, %(c_trace)s)")
    order = f"ORDER BY {key} {direction}, r.trace_id {direction}"
    columns, filters = _trace_filters(f)
    if not filters:
        return f"""SELECT {_SUMMARY_COLUMNS}
            FROM (SELECT * FROM spans r WHERE {" AND ".join(terms)} {order} LIMIT %(limit)s) r
            {_lateral([])} {order}"""
    return f"""WITH candidates AS MATERIALIZED (
            SELECT * FROM spans r WHERE {" AND ".join(terms)} {order} LIMIT %(probe)s)
        SELECT {_SUMMARY_COLUMNS}, (SELECT count(*) FROM candidates) AS candidates
        FROM candidates r {_lateral(columns)}
        WHERE {" AND ".join(filters)} {order} LIMIT %(limit)s"""


def _page_by_aggregate(
    f: TraceFilter, sort: TraceSort, direction: str, cursor: TraceCursor | None, params: dict[str, Any]
) -> str:
    """Filters over all spans of a trace, or the cost sort: one hash aggregate of the range's spans
    per trace (its cost bounded by the range, not by how rare matches are), then the page."""
    having = ["root_start >= %(start)s", "root_start < %(end)s"]
    having += [expr for attr, expr in _SPAN_FILTERS if getattr(f, attr) is not None]
    if f.status == "error":
        having.append("count(*) FILTER (WHERE s.status_code = 'error') > 0")
    elif f.status == "ok":
        having.append("count(*) FILTER (WHERE s.status_code = 'error') = 0")
    if f.min_cost_usd is not None:
        having.append("sum(s.cost_usd) >= %(min_cost)s")
    if f.name is not None:
        having.append("bool_or(s.parent_span_id IS NULL AND s.name = %(name)s)")
    if f.min_duration_ms is not None:
        having.append("root_duration >= %(min_duration)s")
    if f.score_name is not None:
        having.append(_score_term("s.trace_id"))
    key = {"start_time": "root_start", "duration_ms": "root_duration", "cost_usd": "sort_cost"}[sort]
    if cursor is not None:
        having.append(f"({key}, s.trace_id) {'<' if direction == 'DESC' else '>'} (%(c_value)s, %(c_trace)s)")
    # Output names cannot be used in HAVING: spell them out.
    aliases = {
        "root_start": "min(s.start_time) FILTER (WHERE s.parent_span_id IS NULL)",
        "root_duration": "max(s.duration_ms) FILTER (WHERE s.parent_span_id IS NULL)",
        "sort_cost": "COALESCE(sum(s.cost_usd), -1)",
    }
    having_sql = " AND ".join(having)
    for alias, expr in aliases.items():
        having_sql = having_sql.replace(alias, expr)
    return f"""WITH c AS (
            SELECT s.trace_id, {aliases["root_start"]} AS root_start, {aliases[key]} AS sort_key
            FROM spans s
            WHERE s.project_id = %(project)s AND s.start_time >= %(start)s - interval '1 hour'
              AND s.start_time < %(end)s + %(window)s {"AND " + _TRACES_MATCHING.format(alias="s") if f.q else ""}
            GROUP BY s.trace_id
            HAVING {having_sql}
            ORDER BY sort_key {direction}, s.trace_id {direction} LIMIT %(limit)s)
        SELECT {_SUMMARY_COLUMNS}, c.sort_key FROM c
        JOIN spans r ON r.project_id = %(project)s AND r.trace_id = c.trace_id AND r.parent_span_id IS NULL
                    AND r.start_time = c.root_start
        {_lateral([])}
        ORDER BY c.sort_key {direction}, r.trace_id {direction}"""


async def list_traces(
    conn: psycopg.AsyncConnection,
    project_id: int,
    f: TraceFilter,
    *,
    sort: TraceSort = "start_time",
    descending: bool = True,
    limit: int = 50,
    cursor: TraceCursor | None = None,
) -> TracePage:
    """One page of trace summaries, newest (or slowest, or costliest) first."""
    params: dict[str, Any] = {
        "project": project_id,
        "window": TRACE_WINDOW,
        "limit": limit + 1,
        "probe": max(PROBE_ROOTS, 4 * (limit + 1)),
        "start": f.start,
        "end": f.end,
        "name": f.name,
        "min_duration": f.min_duration_ms,
        "min_cost": f.min_cost_usd,
        "q": f.q,
        "score_name": f.score_name,
        "score_label": f.score_label,
        "min_score": f.min_score,
        "max_score": f.max_score,
    }
    params.update({attr: getattr(f, attr) for attr, _ in _SPAN_FILTERS})
    if cursor is not None:
        params.update(c_value=cursor.value, c_trace=cursor.trace_id)
    direction = "DESC" if descending else "ASC"
    filtered = (
        f.status is not None
        or f.min_cost_usd is not None
        or f.score_name is not None
        or any(getattr(f, attr) is not None for attr, _ in _SPAN_FILTERS)
    )
    by_aggregate = sort == "cost_usd"
    if not by_aggregate:
        rows = await _fetchall(conn, _page_by_root(f, sort, direction, cursor, params), params)
        # A filtered probe that neither filled the page nor saw every candidate: matches are rare,
        # aggregate the whole range instead.
        by_aggregate = filtered and len(rows) <= limit and not (rows and rows[0]["candidates"] < params["probe"])
    if by_aggregate:
        rows = await _fetchall(conn, _page_by_aggregate(f, sort, direction, cursor, params), params)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        value = last["sort_key"] if by_aggregate else last[sort]
        next_cursor = TraceCursor(sort, descending, value, last["trace_id"]).encode()
    for row in rows:
        row.pop("sort_key", None)
        row.pop("candidates", None)
    return TracePage(rows, next_cursor)


# ---------------------------------------------------------------------------------------------
# structured queries (POST /api/v1/query)

#: Fields that can be filtered on and grouped by: name -> SQL over the spans table.
TEXT_FIELDS: dict[str, str] = {
    "trace_id": "trace_id",
    "span_id": "span_id",
    "parent_span_id": "parent_span_id",
    "service_name": "service_name",
    "environment": "environment",
    "scope_name": "scope_name",
    "name": "name",
    "kind": "kind",
    "status_code": "status_code",
    "provider": "provider",
    "request_model": "request_model",
    "response_model": "response_model",
    "model": "COALESCE(response_model, request_model)",
    "operation": "operation",
    "session_id": "session_id",
    "user_id": "user_id",
    "cost_source": "cost_source",
}
#: Numeric fields: filters compare them, aggregates run over them.
NUMERIC_FIELDS: dict[str, str] = {
    "duration_ms": "duration_ms",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "cached_input_tokens": "cached_input_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "cost_usd": "cost_usd",
    "time_to_first_token_ms": "time_to_first_token_ms",
}
#: Prefixes naming a key inside a JSONB column: ``attributes.gen_ai.request.temperature``.
JSON_PREFIXES: dict[str, str] = {"attributes.": "attributes", "resource.": "resource"}

AGGREGATE_FUNCTIONS: tuple[str, ...] = (
    "count",
    "count_distinct_traces",
    "sum",
    "avg",
    "min",
    "max",
    "p50",
    "p90",
    "p95",
    "p99",
)
FILTER_OPS: tuple[str, ...] = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists")
MAX_QUERY_ROWS = 10_000
MAX_JSON_KEY = 200

_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _json_field(name: str) -> tuple[str, str] | None:
    for prefix, column in JSON_PREFIXES.items():
        if name.startswith(prefix):
            key = name[len(prefix) :]
            if not key or len(key) > MAX_JSON_KEY:
                raise QueryError(f"{name!r}: the key after {prefix!r} must be 1 to {MAX_JSON_KEY} characters")
            return column, key
    return None


def check_field(name: str, *, numeric: bool = False) -> str:
    """``name`` if it is a field queries may use (``numeric``: one aggregates can run over)."""
    if numeric:
        if name not in NUMERIC_FIELDS:
            raise QueryError(f"unknown numeric field {name!r}; use one of: {', '.join(NUMERIC_FIELDS)}")
        return name
    if name in TEXT_FIELDS or name in NUMERIC_FIELDS or _json_field(name):
        return name
    raise QueryError(
        f"unknown field {name!r}; use one of: {', '.join([*TEXT_FIELDS, *NUMERIC_FIELDS])}, "
        "or attributes.<key> / resource.<key>"
    )


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Aggregate:
    fn: str
    field: str | None = None
    alias: str | None = None

    @property
    def name(self) -> str:
        if self.alias:
            return self.alias
        return self.fn if self.field is None else f"{self.fn}_{self.field}"


@dataclass(frozen=True)
class Order:
    key: str
    descending: bool = True


@dataclass(frozen=True)
class SpanQuery:
    start: datetime
    end: datetime
    filters: Sequence[Filter] = ()
    group_by: Sequence[str] = ()
    aggregates: Sequence[Aggregate] = (Aggregate("count"),)
    order_by: Sequence[Order] = ()
    limit: int = 100
    #: Adds a ``time`` group: the start of each bucket of this length.
    bucket: timedelta | None = None


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False


@dataclass
class _Compiler:
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "%s"

    def text_expr(self, name: str) -> str:
        """SQL of a field for grouping and text comparisons."""
        if name in TEXT_FIELDS:
            return TEXT_FIELDS[name]
        if name in NUMERIC_FIELDS:
            return NUMERIC_FIELDS[name]
        column, key = _json_field(name)  # type: ignore[misc]
        return f"({column} ->> {self.bind(key)})"

    def filter_sql(self, f: Filter) -> str:
        if f.op not in FILTER_OPS:
            raise QueryError(f"unknown filter op {f.op!r}; use one of: {', '.join(FILTER_OPS)}")
        json_field = _json_field(f.field)
        if json_field:
            return self._json_filter(json_field, f)
        check_field(f.field)
        expr = self.text_expr(f.field)
        numeric = f.field in NUMERIC_FIELDS
        if f.op == "exists":
            return f"{expr} IS NOT NULL" if f.value in (None, True) else f"{expr} IS NULL"
        if f.op == "contains":
            if numeric or not isinstance(f.value, str):
                raise QueryError(f"filter {f.field} contains: needs a text field and a string value")
            return f"{expr} ILIKE {self.bind('%' + _escape_like(f.value) + '%')}"
        if f.op in ("in", "not_in"):
            values = f.value if isinstance(f.value, list) else None
            if not values or len(values) > 1000:
                raise QueryError(f"filter {f.field} {f.op}: value must be a list of 1 to 1000 items")
            cast = "float8[]" if numeric else "text[]"
            items = [_scalar(f, v, numeric) for v in values]
            sql = f"{expr} = ANY({self.bind(items)}::{cast})"
            return sql if f.op == "in" else f"NOT ({sql}) OR {expr} IS NULL"
        value = _scalar(f, f.value, numeric)
        if not numeric and f.op not in ("eq", "ne"):
            raise QueryError(f"filter {f.field} {f.op}: ordering comparisons need a numeric field")
        op = _COMPARE[f.op]
        cast = "::float8" if numeric else "::text"
        if f.op == "ne":
            return f"({expr} IS DISTINCT FROM {self.bind(value)}{cast})"
        return f"{expr} {op} {self.bind(value)}{cast}"

    def _json_filter(self, json_field: tuple[str, str], f: Filter) -> str:
        column, key = json_field
        if f.op == "exists":
            sql = f"{column} ? {self.bind(key)}"
            return sql if f.value in (None, True) else f"NOT ({sql})"
        if f.op == "contains":
            if not isinstance(f.value, str):
                raise QueryError(f"filter {f.field} contains: value must be a string")
            return f"({column} ->> {self.bind(key)}) ILIKE {self.bind('%' + _escape_like(f.value) + '%')}"
        if f.op in ("in", "not_in"):
            if not isinstance(f.value, list) or not 1 <= len(f.value) <= 1000:
                raise QueryError(f"filter {f.field} {f.op}: value must be a list of 1 to 1000 items")
            sql = f"({column} -> {self.bind(key)}) = ANY({self.bind([json.dumps(v) for v in f.value])}::jsonb[])"
            return sql if f.op == "in" else f"NOT COALESCE({sql}, false)"
        if isinstance(f.value, (dict, list)) or f.value is None:
            raise QueryError(f"filter {f.field} {f.op}: value must be a string, number or boolean")
        # jsonb comparisons never fail on mixed types (numbers compare as numbers).
        op = "IS DISTINCT FROM" if f.op == "ne" else _COMPARE[f.op]
        return f"({column} -> {self.bind(key)}) {op} {self.bind(json.dumps(f.value))}::jsonb"

    def aggregate_sql(self, a: Aggregate) -> str:
        if a.fn not in AGGREGATE_FUNCTIONS:
            raise QueryError(f"unknown aggregate {a.fn!r}; use one of: {', '.join(AGGREGATE_FUNCTIONS)}")
        if a.fn == "count":
            if a.field is not None:
                return f"count({NUMERIC_FIELDS[check_field(a.field, numeric=True)]})"
            return "count(*)"
        if a.fn == "count_distinct_traces":
            return "count(DISTINCT trace_id)"
        if a.field is None:
            raise QueryError(f"aggregate {a.fn} needs a field (one of: {', '.join(NUMERIC_FIELDS)})")
        column = NUMERIC_FIELDS[check_field(a.field, numeric=True)]
        if a.fn.startswith("p"):
            q = int(a.fn[1:]) / 100
            return f"percentile_cont({q}) WITHIN GROUP (ORDER BY {column})"
        return f"{a.fn}({column})"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _scalar(f: Filter, value: Any, numeric: bool) -> Any:
    if numeric:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise QueryError(f"filter {f.field} {f.op}: value must be a finite number")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QueryError(f"filter {f.field} {f.op}: value must be a string")
    return str(value)


def compile_span_query(project_id: int, q: SpanQuery) -> tuple[str, list[Any], list[str]]:
    """SQL, parameters and output column names of a structured query."""
    check_range(q.start, q.end)
    if not 1 <= q.limit <= MAX_QUERY_ROWS:
        raise QueryError(f"limit must be between 1 and {MAX_QUERY_ROWS}")
    if not q.aggregates:
        raise QueryError('give at least one aggregate (for example {"fn": "count"})')
    c = _Compiler()
    select: list[str] = []
    columns: list[str] = []
    groups: list[str] = []
    if q.bucket is not None:
        if q.bucket < timedelta(seconds=1):
            raise QueryError("bucket must be at least one second")
        if (q.end - q.start) / q.bucket > MAX_QUERY_ROWS:
            raise QueryError(f"bucket is too small for the time range (more than {MAX_QUERY_ROWS} buckets)")
        select.append(f"date_bin({c.bind(q.bucket)}::interval, start_time, {c.bind(q.start)}::timestamptz)")
        columns.append("time")
    for name in q.group_by:
        check_field(name)
        if name in columns:
            raise QueryError(f"group_by names {name!r} twice")
        select.append(c.text_expr(name))
        columns.append(name)
    groups = [str(i + 1) for i in range(len(select))]
    for a in q.aggregates:
        if a.name in columns:
            raise QueryError(f"output column {a.name!r} appears twice: give the aggregate an alias")
        select.append(c.aggregate_sql(a))
        columns.append(a.name)
    where = [f"project_id = {c.bind(project_id)}", f"start_time >= {c.bind(q.start)}", f"start_time < {c.bind(q.end)}"]
    where += [f"({c.filter_sql(f)})" for f in q.filters]
    order = []
    for o in q.order_by:
        if o.key not in columns:
            raise QueryError(f"order_by {o.key!r} is not an output column; use one of: {', '.join(columns)}")
        order.append(f"{columns.index(o.key) + 1} {'DESC' if o.descending else 'ASC'} NULLS LAST")
    if not order:
        order = [f"{i} ASC" for i in groups] or ["1"]
    sql = f"SELECT {', '.join(select)} FROM spans WHERE {' AND '.join(where)}"
    if groups:
        sql += f" GROUP BY {', '.join(groups)}"
    sql += f" ORDER BY {', '.join(order)} LIMIT {c.bind(q.limit + 1)}"
    return sql, c.params, columns


async def run_span_query(conn: psycopg.AsyncConnection, project_id: int, q: SpanQuery) -> QueryResult:
    sql, params, columns = compile_span_query(project_id, q)
    cur = await conn.execute(sql, params)
    rows = [list(r) for r in await cur.fetchall()]
    truncated = len(rows) > q.limit
    return QueryResult(columns, rows[: q.limit], truncated)


# ---------------------------------------------------------------------------------------------
# metrics from the rollups (GET /api/v1/metrics)

MetricsGroup = Literal["none", "model", "provider", "service"]
METRIC_GROUPS: dict[str, str | None] = {
    "none": None,
    "model": "model",
    "provider": "provider",
    "service": "service_name",
}
#: Intervals a metrics series may use, by name.
INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "3h": timedelta(hours=3),
    "6h": timedelta(hours=6),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
}
MAX_POINTS = 2000
#: Points per series that ``auto`` aims for.
AUTO_POINTS = 120

# Sum of latency histograms, bucket by bucket, with plain sum() aggregates: about five times
# faster than the llmobs_hist_sum aggregate over many rows (no function call per row).
_HIST_SUM = "ARRAY[" + ", ".join(f"sum(latency_hist[{i}])" for i in range(1, HIST_BUCKETS + 1)) + "]"
_TTFT_HIST_SUM = "ARRAY[" + ", ".join(f"COALESCE(sum(ttft_hist[{i}]), 0)" for i in range(1, HIST_BUCKETS + 1)) + "]"


@dataclass(frozen=True)
class MetricsRequest:
    start: datetime
    end: datetime
    interval: str = "auto"
    group_by: MetricsGroup = "none"
    service: str | None = None
    model: str | None = None
    provider: str | None = None
    #: Count only LLM spans (those with a model or provider), not the spans around them.
    llm_only: bool = True

    def resolved_interval(self) -> str:
        """The interval to use. ``auto``: about AUTO_POINTS points, in whole hours for ranges over
        12 hours (so the hourly rollup serves them)."""
        check_range(self.start, self.end)
        span = self.end - self.start
        if self.interval == "auto":
            hourly = span > timedelta(hours=12)
            name = next(
                (
                    n
                    for n, length in INTERVALS.items()
                    if span / length <= AUTO_POINTS and (not hourly or length % timedelta(hours=1) == timedelta(0))
                ),
                "1d",
            )
        elif self.interval in INTERVALS:
            name = self.interval
        else:
            raise QueryError(f"unknown interval {self.interval!r}; use auto or one of: {', '.join(INTERVALS)}")
        if span / INTERVALS[name] > MAX_POINTS:
            raise QueryError(
                f"interval {name} gives more than {MAX_POINTS} points for this time range: choose "
                "a longer interval or a shorter range"
            )
        return name


def rollup_for(interval: timedelta) -> str:
    """The hourly rollup serves whole-hour intervals, the minute rollup the rest."""
    return "spans_rollup_1h" if interval % timedelta(hours=1) == timedelta(0) else "spans_rollup_1m"


async def metric_series(
    conn: psycopg.AsyncConnection, project_id: int, req: MetricsRequest
) -> tuple[str, str, list[dict[str, Any]]]:
    """(interval, rollup, series): one series per group (``{"group", "points"}``), points in time
    order."""
    interval_name = req.resolved_interval()
    interval = INTERVALS[interval_name]
    table = rollup_for(interval)
    group_col = METRIC_GROUPS[req.group_by]
    group_sql = f"NULLIF({group_col}, '')" if group_col else "NULL::text"
    params: dict[str, Any] = {
        "project": project_id,
        "interval": interval,
        "start": req.start,
        "end": req.end,
        "origin": datetime(2000, 1, 3, tzinfo=UTC),
    }  # a Monday: weeks align too
    where = [
        "project_id = %(project)s",
        # Buckets that overlap the range: a rollup bucket starts at most one bucket before it.
        f"bucket >= date_bin('{'1 hour' if table == 'spans_rollup_1h' else '1 minute'}'::interval, "
        "%(start)s, %(origin)s)",
        "bucket < %(end)s",
    ]
    if req.llm_only:
        where.append("(model <> '' OR provider <> '')")
    for column, attr in (("service_name", "service"), ("model", "model"), ("provider", "provider")):
        value = getattr(req, attr)
        if value is not None:
            params[attr] = value
            where.append(f"{column} = %({attr})s")
    sql = f"""
        SELECT date_bin(%(interval)s, bucket, %(origin)s) AS time, {group_sql} AS grp,
               sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
               sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
               sum(total_tokens)::bigint AS total_tokens, sum(cost_usd)::float8 AS cost_usd,
               sum(duration_sum_ms) AS duration_sum_ms, max(duration_max_ms) AS duration_max_ms,
               {_HIST_SUM} AS hist, sum(ttft_count)::bigint AS ttft_count, sum(ttft_sum_ms) AS ttft_sum_ms,
               {_TTFT_HIST_SUM} AS ttft_hist
        FROM {table} WHERE {" AND ".join(where)}
        GROUP BY 1, 2 ORDER BY 1, 2"""
    return interval_name, table, _series(await _fetchall(conn, sql, params))


def hist_quantiles(hist: Sequence[int] | None, qs: Sequence[float]) -> list[float | None]:
    """The q-quantiles (0..1) of a latency histogram in ms: what ``llmobs_hist_quantile``
    computes in SQL (0001_core.sql), here in Python, where it is much cheaper per series point.
    One running sum serves every quantile."""
    cumulative = list(accumulate(hist or ()))
    if not cumulative or cumulative[-1] <= 0:
        return [None] * len(qs)
    return [_bucket_value(bisect_left(cumulative, max(1, math.ceil(q * cumulative[-1]))) + 1) for q in qs]


def _bucket_value(i: int) -> float:
    """The value a quantile falling in (1-based) bucket ``i`` reports: the bucket's middle on the
    log scale; the underflow and overflow buckets report their bounds."""
    if i == 1:
        return 0.5
    if i >= HIST_BUCKETS:
        return 600000.0
    return math.exp(math.log(0.5) + (i - 2 + 0.5) * _HIST_STEP)


_HIST_STEP = (math.log(600000) - math.log(0.5)) / 64


def _series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        requests = r["requests"]
        p50, p95, p99 = hist_quantiles(r["hist"], (0.5, 0.95, 0.99))
        ttft_p50, ttft_p95 = hist_quantiles(r["ttft_hist"], (0.5, 0.95))
        ttft_count = r["ttft_count"]
        groups.setdefault(r["grp"], []).append(
            {
                "time": r["time"],
                "requests": requests,
                "errors": r["errors"],
                "error_rate": r["errors"] / requests if requests else None,
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "total_tokens": r["total_tokens"],
                "cost_usd": r["cost_usd"],
                "latency_avg_ms": r["duration_sum_ms"] / requests
                if requests and r["duration_sum_ms"] is not None
                else None,
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
                "latency_p99_ms": p99,
                "latency_max_ms": r["duration_max_ms"],
                "time_to_first_token_avg_ms": r["ttft_sum_ms"] / ttft_count if ttft_count else None,
                "time_to_first_token_p50_ms": ttft_p50,
                "time_to_first_token_p95_ms": ttft_p95,
            }
        )
    return [{"group": g, "points": points} for g, points in groups.items()]


# ---------------------------------------------------------------------------------------------


def check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("times need a time zone (for example 2024-05-01T12:00:00Z)")
    if start >= end:
        raise QueryError("from must be before to")
