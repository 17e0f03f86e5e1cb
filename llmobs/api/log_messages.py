"""Span messages joined with their GenAI log records, at read time.

The OTel GenAI instrumentations (``opentelemetry-instrumentation-openai-v2`` by default) send
prompts and completions as OTLP log records (GenAI events) carrying the span's id, not on the
span. They may arrive before or after the span, so the join happens when a span is read: the
messages served for a span are its own, then those of its GenAI log records in time order
(:func:`llmobs.collector.messages.messages_from_event` reads each record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmobs.collector.messages import MESSAGE_EVENTS, messages_from_event
from llmobs.store import queries, signal_queries

if TYPE_CHECKING:
    import psycopg


async def read_span(conn: psycopg.AsyncConnection, project_id: int, span_id: str) -> dict[str, Any] | None:
    """One span (:func:`llmobs.store.queries.get_span`) with its log records' messages."""
    row = await queries.get_span(conn, project_id, span_id)
    if row is not None:
        events = await signal_queries.log_records(conn, project_id, span_id=span_id, event_names=MESSAGE_EVENTS)
        join_messages([row], events)
    return row


async def read_trace_spans(conn: psycopg.AsyncConnection, project_id: int, trace_id: str) -> list[dict[str, Any]]:
    """A trace's spans (:func:`llmobs.store.queries.get_trace_spans`) with their log records'
    messages."""
    rows = await queries.get_trace_spans(conn, project_id, trace_id)
    if rows:
        events = await signal_queries.log_records(conn, project_id, trace_id=trace_id, event_names=MESSAGE_EVENTS)
        join_messages(rows, events)
    return rows


def join_messages(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """Give every span row ``input_messages`` / ``output_messages`` (lists, empty when none): its
    own, then the messages of the GenAI log records carrying its span id, in the records' order."""
    by_span: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for record in records:
        if record["span_id"] is None:
            continue
        inputs, outputs = messages_from_event(record["event_name"], record["attributes"] or {}, record["body"])
        joined = by_span.setdefault(record["span_id"], ([], []))
        joined[0].extend(inputs)
        joined[1].extend(outputs)
    for row in rows:
        inputs, outputs = by_span.get(row["span_id"], ([], []))
        row["input_messages"] = [*(row.get("input_messages") or ()), *inputs]
        row["output_messages"] = [*(row.get("output_messages") or ()), *outputs]
