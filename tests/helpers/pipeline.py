"""Spans through the collector's pipeline in-process (normalization, cost, validation,
redaction), COPYed into PostgreSQL as the app role and read back: for the pipeline and redaction
tests."""

from __future__ import annotations

from datetime import UTC, datetime

from llmobs.collector.pipeline import RawSpan, SpanPipeline
from llmobs.config import Settings
from llmobs.store.db import connect
from llmobs.store.maintain import ensure_partitions
from llmobs.store.spans import copy_spans

T0 = int(datetime(2025, 7, 1, 12, tzinfo=UTC).timestamp() * 1e9)
_seq = iter(range(1, 1_000_000))


def span(attributes: dict, *, resource: dict | None = None, start: int = T0, **fields) -> RawSpan:
    n = next(_seq)
    values = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "name": "chat",
        "start_time": start,
        "end_time": start + 1_500_000_000,
        "kind": "client",
        "attributes": attributes,
        "resource": resource or {"service.name": "svc", "deployment.environment.name": "prod"},
    }
    values.update(fields)
    return RawSpan(**values)


#: The tests price spans of fixed past dates (price history): a window wide enough for them.
WIDE_WINDOW = {"COLLECTOR_MAX_SPAN_AGE_DAYS": "20000", "RETENTION_DAYS": "20000"}


def make_pipeline(settings: Settings, admin_conn, **overrides: str) -> SpanPipeline:
    pipeline = SpanPipeline.from_settings(settings.with_overrides(**{**WIDE_WINDOW, **overrides}))
    pipeline.load_prices(admin_conn)
    return pipeline


def store(settings: Settings, pipeline: SpanPipeline, spans: list[RawSpan], project_id: int = 1):
    result = pipeline.process(spans, project_id)
    with connect(settings, "admin", autocommit=True) as admin:  # what `db maintain` does for the window
        ensure_partitions(admin, [r.start_time.date() for r in result.rows])
    with connect(settings, "app") as conn:
        copy_spans(conn, result.rows)
        conn.commit()
    return result


def stored(admin_conn, span_id: str) -> dict:
    cur = admin_conn.execute("SELECT * FROM spans WHERE span_id = %s", (span_id,))
    row = cur.fetchone()
    assert row is not None, f"span {span_id} not stored"
    return dict(zip([c.name for c in cur.description], row, strict=True))
