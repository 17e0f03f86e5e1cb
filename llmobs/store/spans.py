"""Writing span rows: the column order of ``spans`` for COPY, the text encoding, and partitions.

Both writers of spans use this module: the collector (group commits of OTLP batches) and the
API (``POST /api/v1/spans``). Rows come from :meth:`llmobs.collector.pipeline.SpanPipeline.process`;
do not build them by hand unless you follow the column types below.

Example (sync psycopg, inside the caller's transaction)::

    result = pipeline.process(raw_spans, project_id=key.project_id)
    with conn.transaction():
        copy_spans(conn, result.rows)

On plain PostgreSQL ``spans`` is partitioned by UTC day and a row whose day has no partition is
refused. Writers never create partitions: `llmobs db maintain` creates one ahead of time for
every day of the accepted window (:class:`SpanWindow`), and the pipeline rejects spans outside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings


class SpanRow(NamedTuple):
    """One row of ``spans`` (every column but ``ingested_at``), in COPY order.

    Types: ids and text columns ``str``; times aware ``datetime`` (UTC); token counts ``int``;
    ``finish_reasons`` a list of ``str``; ``attributes``/``events``/``resource``/``links`` JSON
    text (``str``, already encoded, without NUL characters); ``input_messages``/``output_messages``
    JSON text or ``None`` (no messages, served as an empty list). ``None`` is SQL NULL. The fields
    are those of :func:`llmobs.store.span_fields.field_names` ``("row")``, in that order.
    """

    project_id: int
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
    cached_input_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_source: str | None
    session_id: str | None
    user_id: str | None
    finish_reasons: list[str] | None
    attributes: str
    events: str
    resource: str
    links: str = "[]"
    input_messages: str | None = None
    output_messages: str | None = None
    time_to_first_token_ms: float | None = None


#: Column order of :class:`SpanRow`, for ``COPY spans (...) FROM STDIN``.
SPAN_COLUMNS: tuple[str, ...] = SpanRow._fields
COPY_SQL = f"COPY spans ({', '.join(SPAN_COLUMNS)}) FROM STDIN"

# COPY text format: backslash, tab, newline and carriage return are escaped; NUL cannot be stored
# in a PostgreSQL text value at all, so it becomes U+FFFD.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r\x00]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\ufffd"}


def _esc_match(m: re.Match[str]) -> str:
    return _COPY_ESCAPES[m.group()]


def _plain(value: str) -> bool:
    """Whether ``value`` holds none of the characters COPY escapes: five scans in C, several
    times cheaper than one regex search (this runs for every span written)."""
    return not ("\\" in value or "\t" in value or "\n" in value or "\r" in value or "\x00" in value)


def _text(value: str | None) -> str:
    if value is None:
        return "\\N"
    if _plain(value):
        return value
    return _COPY_SPECIAL.sub(_esc_match, value)


_arrays: dict[tuple[str, ...], str] = {}


def _array(values: list[str]) -> str:
    """A text[] literal in COPY text format. Finish reasons repeat ("stop", "length"): cached."""
    key = tuple(values)
    literal = _arrays.get(key)
    if literal is None:
        quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        literal = _text("{" + ",".join(quoted) + "}")
        if len(_arrays) < 1000:
            _arrays[key] = literal
    return literal


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: "00" to "59" and "000" to "999": hours, minutes, seconds and microseconds written by table
#: lookups, not by formatting
_DIGITS2 = tuple(f"{i:02d}" for i in range(60))
_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))
#: days since the epoch -> "YYYY-MM-DDT" (spans fall on few days)
_DAYS: dict[int, str] = {}
_DAYS_MAX = 1024


def copy_time(value: datetime) -> str:
    """``value.isoformat()``, the text COPY gets for a timestamptz, in under half the
    instructions for UTC times (every span has two): the date part is cached per day, the rest
    comes from tables. Other time zones take ``isoformat`` itself."""
    if value.tzinfo is not UTC:
        return value.isoformat()
    since = value - _EPOCH
    day = _DAYS.get(since.days)
    if day is None:
        if len(_DAYS) >= _DAYS_MAX:
            _DAYS.clear()
        day = _DAYS[since.days] = value.date().isoformat() + "T"
    hours, rest = divmod(since.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    us = since.microseconds
    if us:
        return (
            f"{day}{_DIGITS2[hours]}:{_DIGITS2[minutes]}:{_DIGITS2[seconds]}"
            f".{_DIGITS3[us // 1000]}{_DIGITS3[us % 1000]}+00:00"
        )
    return f"{day}{_DIGITS2[hours]}:{_DIGITS2[minutes]}:{_DIGITS2[seconds]}+00:00"


def encode_row(r: SpanRow | tuple) -> str:
    """One row in COPY text format, without the trailing newline."""
    (
        project_id,
        trace_id,
        span_id,
        parent,
        service,
        env,
        scope,
        name,
        kind,
        start,
        end,
        duration,
        status,
        status_message,
        provider,
        request_model,
        response_model,
        operation,
        input_tokens,
        output_tokens,
        total_tokens,
        cached_tokens,
        reasoning_tokens,
        cost,
        cost_source,
        session_id,
        user_id,
        finish_reasons,
        attributes,
        events,
        resource,
        links,
        input_messages,
        output_messages,
        ttft_ms,
    ) = r
    texts = (
        trace_id,
        span_id,
        parent,
        service,
        env,
        scope,
        name,
        status_message,
        provider,
        request_model,
        response_model,
        operation,
        cost_source,
        session_id,
        user_id,
    )
    if not _plain("".join(filter(None, texts))):
        (
            trace_id,
            span_id,
            parent,
            service,
            env,
            scope,
            name,
            status_message,
            provider,
            request_model,
            response_model,
            operation,
            cost_source,
            session_id,
            user_id,
        ) = (_text(t) for t in texts)
    n = "\\N"
    return "\t".join(
        (
            str(project_id),
            trace_id,
            span_id,
            n if parent is None else parent,
            service,
            n if env is None else env,
            n if scope is None else scope,
            name,
            kind,
            copy_time(start),
            copy_time(end),
            str(duration),
            status,
            n if status_message is None else status_message,
            n if provider is None else provider,
            n if request_model is None else request_model,
            n if response_model is None else response_model,
            n if operation is None else operation,
            n if input_tokens is None else str(input_tokens),
            n if output_tokens is None else str(output_tokens),
            n if total_tokens is None else str(total_tokens),
            n if cached_tokens is None else str(cached_tokens),
            n if reasoning_tokens is None else str(reasoning_tokens),
            n if cost is None else str(cost),
            n if cost_source is None else cost_source,
            n if session_id is None else session_id,
            n if user_id is None else user_id,
            n if finish_reasons is None else _array(finish_reasons),
            # JSON text holds no raw control characters (they are \\u-escaped), only backslashes.
            attributes.replace("\\", "\\\\"),
            events.replace("\\", "\\\\"),
            resource.replace("\\", "\\\\"),
            links.replace("\\", "\\\\"),
            n if input_messages is None else input_messages.replace("\\", "\\\\"),
            n if output_messages is None else output_messages.replace("\\", "\\\\"),
            n if ttft_ms is None else str(ttft_ms),
        )
    )


class CommittedSpan(NamedTuple):
    """What the collector keeps of a span once its row is encoded for COPY, until the commit: the
    fields of ingest stats and new-trace messages (:func:`llmobs.collector.publish.trace_messages`).
    Holding the whole :class:`SpanRow` (attributes, events, messages as JSON text) that long costs
    memory, and freeing it after the commit, cache-cold, costs CPU."""

    project_id: int
    trace_id: str
    parent_span_id: str | None
    service_name: str
    name: str
    start_time: datetime
    status_code: str


def committed_spans(rows: Iterable[SpanRow]) -> list[CommittedSpan]:
    """The :class:`CommittedSpan` of each row."""
    return [
        CommittedSpan(r.project_id, r.trace_id, r.parent_span_id, r.service_name, r.name, r.start_time, r.status_code)
        for r in rows
    ]


def encode_rows(rows: Iterable[SpanRow | tuple]) -> bytes:
    """Rows as one COPY text-format payload (UTF-8, newline-terminated)."""
    lines = [encode_row(r) for r in rows]
    if not lines:
        return b""
    lines.append("")
    return "\n".join(lines).encode()


@dataclass(frozen=True)
class SpanWindow:
    """The span start times a writer accepts: from ``max_age`` before now to ``max_future`` after.

    `llmobs db maintain` keeps a daily partition ready for every day of this window, so writers
    never create partitions: a client's timestamp cannot make the database grow tables.
    """

    max_age: timedelta = timedelta(days=30)
    max_future: timedelta = timedelta(minutes=60)

    @classmethod
    def from_settings(cls, settings: Settings) -> SpanWindow:
        """COLLECTOR_MAX_SPAN_AGE_DAYS (capped at RETENTION_DAYS) and COLLECTOR_MAX_SPAN_FUTURE_MINUTES."""
        days = min(settings.get_int("COLLECTOR_MAX_SPAN_AGE_DAYS"), settings.get_int("RETENTION_DAYS"))
        return cls(timedelta(days=days), timedelta(minutes=settings.get_int("COLLECTOR_MAX_SPAN_FUTURE_MINUTES")))

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        return now - self.max_age, now + self.max_future

    def days(self, now: datetime, ahead_days: int) -> list[date]:
        """Every UTC day a span of the window may start on, and ``ahead_days`` more after today."""
        earliest, latest = self.bounds(now)
        last = max(latest.date(), now.date() + timedelta(days=ahead_days))
        return [earliest.date() + timedelta(days=i) for i in range((last - earliest.date()).days + 1)]


def is_missing_partition(exc: BaseException) -> bool:
    """Whether a COPY failed because a row's day has no partition (maintenance has not run)."""
    return getattr(exc, "sqlstate", None) == "23514" and "no partition" in str(exc)


MISSING_PARTITION_MESSAGE = "no partition is ready for a span's day: `llmobs db maintain` has not run; retry later"


def copy_spans(target: psycopg.Connection | psycopg.Cursor, rows: Sequence[SpanRow | tuple]) -> int:
    """COPY ``rows`` into ``spans`` through ``target`` (a connection or a cursor), in the caller's
    transaction. Returns the number of rows written.

    The caller commits. Works as any role with INSERT on ``spans`` (the app role). A row whose
    day has no partition fails the COPY (:func:`is_missing_partition`).
    """
    if not rows:
        return 0
    cursor = target.cursor() if hasattr(target, "cursor") else target
    data = encode_rows(rows)
    with cursor.copy(COPY_SQL) as copy:
        copy.write(data)
    return len(rows)


async def acopy_spans(
    target: psycopg.AsyncConnection | psycopg.AsyncCursor,
    rows: Sequence[SpanRow | tuple],
) -> int:
    """:func:`copy_spans` for an async psycopg connection or cursor."""
    if not rows:
        return 0
    cursor = target.cursor() if hasattr(target, "cursor") else target
    data = encode_rows(rows)
    async with cursor.copy(COPY_SQL) as copy:
        await copy.write(data)
    return len(rows)
