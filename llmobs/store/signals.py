"""Writing OTLP log records and metric data points, and the tables the collector COPYs into.

The collector's writer group-commits rows of several tables in one transaction: a
:class:`CopyTable` says how rows of one table are encoded for COPY, which UTC day each row
belongs to, and how that day's partition is made. :data:`SPANS`, :data:`LOG_RECORDS` and
:data:`METRIC_POINTS` are the three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from llmobs.store.spans import COPY_SQL as SPANS_COPY_SQL
from llmobs.store.spans import _text, encode_rows

if TYPE_CHECKING:
    import psycopg


class LogRow(NamedTuple):
    """One row of ``log_records`` (every column but ``ingested_at``), in COPY order. ``body``,
    ``attributes`` and ``resource`` are JSON text (``body`` None when the record has none)."""

    project_id: int
    time: datetime
    observed_time: datetime | None
    trace_id: str | None
    span_id: str | None
    service_name: str
    scope_name: str | None
    severity_number: int | None
    severity_text: str | None
    event_name: str | None
    body: str | None
    attributes: str
    resource: str


class MetricRow(NamedTuple):
    """One row of ``metric_points`` (every column but ``ingested_at``), in COPY order.
    ``kind``: sum, gauge or histogram; ``temporality``: delta, cumulative or unspecified;
    ``attributes`` JSON text."""

    project_id: int
    time: datetime
    start_time: datetime | None
    name: str
    unit: str | None
    kind: str
    temporality: str
    service_name: str
    provider: str | None
    model: str | None
    operation: str | None
    token_type: str | None
    series_key: str
    value: float | None
    hist_count: int | None
    sum: float | None
    min: float | None
    max: float | None
    bounds: list[float] | None
    counts: list[int] | None
    attributes: str


def _field(value: Any) -> str:
    """One value in COPY text format: NULL, a number, a time, a numeric array or text."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "{" + ",".join(map(str, value)) + "}"
    return str(value)


def encode_signal_rows(rows: Iterable[tuple]) -> bytes:
    """Metric rows (or any rows of the value types :func:`_field` knows) as one COPY text-format
    payload (UTF-8, newline-terminated)."""
    return _payload(["\t".join(map(_field, row)) for row in rows])


def _json(text: str | None) -> str:
    # JSON text holds no raw control characters (they are \u-escaped), only backslashes.
    return "\\N" if text is None else text.replace("\\", "\\\\")


def encode_log_rows(rows: Iterable[LogRow]) -> bytes:
    """Log rows as one COPY text-format payload: the hot path of log ingestion, so the JSON
    columns skip the general escaping."""
    lines = []
    for r in rows:
        head = "\t".join(map(_field, r[:10]))
        lines.append(f"{head}\t{_json(r.body)}\t{_json(r.attributes)}\t{_json(r.resource)}")
    return _payload(lines)


def _payload(lines: list[str]) -> bytes:
    if not lines:
        return b""
    lines.append("")
    return "\n".join(lines).encode()


@dataclass(frozen=True)
class CopyTable:
    """How the collector writes rows of one table: its COPY statement and encoding, and how
    `llmobs db maintain` makes a day's partition (writers never do)."""

    name: str
    copy_sql: str
    #: SQL creating the partition of one day (parameter: the day); a no-op on TimescaleDB
    partition_sql: str
    encode: Callable[[Sequence[Any]], bytes]


def _copy_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN"


SPANS = CopyTable("spans", SPANS_COPY_SQL, "SELECT llmobs_ensure_span_partition(%s)", encode_rows)
LOG_RECORDS = CopyTable(
    "log_records",
    _copy_sql("log_records", LogRow._fields),
    "SELECT llmobs_ensure_signal_partition('log_records', %s)",
    encode_log_rows,
)
METRIC_POINTS = CopyTable(
    "metric_points",
    _copy_sql("metric_points", MetricRow._fields),
    "SELECT llmobs_ensure_signal_partition('metric_points', %s)",
    encode_signal_rows,
)
#: Tables whose daily partitions `llmobs db maintain` makes ahead and drops for retention.
PARTITIONED_SIGNALS = (LOG_RECORDS, METRIC_POINTS)


def copy_signal_rows(conn: psycopg.Connection, table: CopyTable, rows: Sequence[Any]) -> int:
    """COPY ``rows`` of ``table`` through ``conn`` in the caller's transaction, into the daily
    partitions `llmobs db maintain` made. Returns the number of rows written; the caller commits."""
    if not rows:
        return 0
    with conn.cursor() as cur, cur.copy(table.copy_sql) as copy:
        copy.write(table.encode(rows))
    return len(rows)
