"""Periodic database upkeep: `llmobs db maintain`.

Plain PostgreSQL: create daily partitions of spans, log records and metric points ahead of time
for every day of the accepted span window (the only place partitions are made), enforce each
project's retention (:mod:`llmobs.store.retention`: whole partitions dropped, expired rows deleted
in batches), and refresh the minute/hour rollups from the last watermark. TimescaleDB does the same
with its own policies, which this keeps in step with the settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from llmobs.store.db import connect, first_line
from llmobs.store.host_facts import HostFacts, record_host_facts
from llmobs.store.retention import RetentionResult, enforce_retention, timescale_retention
from llmobs.store.signals import PARTITIONED_SIGNALS, SPANS
from llmobs.store.spans import SpanWindow

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

log = logging.getLogger(__name__)

#: Late spans (start time before the watermark) are folded in if they arrive within this window.
ROLLUP_LOOKBACK = timedelta(minutes=10)


@dataclass
class MaintainResult:
    timescale: bool
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    rollup_rows: int = 0
    rollup_from: datetime | None = None
    host_facts: list[str] = field(default_factory=list)
    retention: RetentionResult | None = None
    #: spans whose messages were added to the search index (message_words) by this pass
    messages_indexed: int = 0


def timescale_enabled(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT llmobs_timescale_enabled()").fetchone()
    return bool(row and row[0])


def ensure_partitions(conn: psycopg.Connection, days: list[date]) -> list[str]:
    """Create the daily partitions of every partitioned table for ``days``; the names made."""
    created = []
    for day in sorted(set(days)):
        for table in (SPANS, *PARTITIONED_SIGNALS):
            row = conn.execute(table.partition_sql, (day,)).fetchone()
            if row and row[0]:
                created.append(f"{table.name}_p{day:%Y%m%d}")
    return created


def prepare_partitions(conn: psycopg.Connection, settings: Settings, now: datetime) -> list[str]:
    """A partition for every day of the accepted span window and PARTITION_PREMAKE_DAYS ahead
    (writers never create partitions, so these are all there will be); the names created."""
    days = SpanWindow.from_settings(settings).days(now, settings.get_int("PARTITION_PREMAKE_DAYS"))
    return ensure_partitions(conn, days)


def maintain(
    conn: psycopg.Connection, settings: Settings, *, now: datetime | None = None, host: HostFacts | None = None
) -> MaintainResult:
    """One maintenance pass. ``conn`` is an autocommit superuser connection; ``host``: volumes and
    certificates to measure and record (see ``host_facts.py``)."""
    now = now or datetime.now(UTC)
    retention = settings.get_int("RETENTION_DAYS")
    result = MaintainResult(timescale=timescale_enabled(conn))
    if host is not None and _has_host_fact_tables(conn):
        result.host_facts = record_host_facts(conn, host)
    if result.timescale:
        timescale_retention(conn, settings, now=now)
        for table in PARTITIONED_SIGNALS:
            conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (table.name,))
            conn.execute("SELECT add_retention_policy(%s, %s::interval)", (table.name, f"{retention} days"))
        _index_messages(conn, now, result)
        return result

    result.partitions_created = prepare_partitions(conn, settings, now)
    result.retention = enforce_retention(conn, settings, now=now)
    result.partitions_dropped = result.retention.partitions_dropped

    with conn.transaction():
        row = conn.execute("SELECT refreshed_to FROM llmobs_rollup_state WHERE name = 'rollups' FOR UPDATE").fetchone()
        if row is None:
            first = conn.execute("SELECT min(start_time) FROM spans").fetchone()
            since = first[0] if first and first[0] else now
        else:
            since = row[0] - ROLLUP_LOOKBACK
        result.rollup_from = since
        written = conn.execute("SELECT llmobs_refresh_rollups(%s)", (since,)).fetchone()
        result.rollup_rows = int(written[0]) if written else 0
        conn.execute(
            """INSERT INTO llmobs_rollup_state (name, refreshed_to, refreshed_at) VALUES ('rollups', %s, now())
               ON CONFLICT (name) DO UPDATE SET refreshed_to = EXCLUDED.refreshed_to, refreshed_at = now()""",
            (now,),
        )
    _index_messages(conn, now, result)
    return result


def _has_host_fact_tables(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('llmobs_volume_usage') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _index_messages(conn: psycopg.Connection, now: datetime, result: MaintainResult) -> None:
    """Fill the search words (``q=`` of the trace list) of the spans written since the last pass.
    Spans start within :data:`ROLLUP_LOOKBACK` of the last pass (or later); each is indexed once."""
    with conn.transaction():
        row = conn.execute(
            "SELECT refreshed_to FROM llmobs_rollup_state WHERE name = 'message_search' FOR UPDATE"
        ).fetchone()
        since = row[0] - ROLLUP_LOOKBACK if row else datetime.min.replace(tzinfo=UTC)
        written = conn.execute("SELECT llmobs_index_messages(%s)", (since,)).fetchone()
        result.messages_indexed = int(written[0]) if written else 0
        conn.execute(
            """INSERT INTO llmobs_rollup_state (name, refreshed_to, refreshed_at) VALUES ('message_search', %s, now())
               ON CONFLICT (name) DO UPDATE SET refreshed_to = EXCLUDED.refreshed_to, refreshed_at = now()""",
            (now,),
        )


def maintain_once(settings: Settings, host: HostFacts | None = None) -> MaintainResult:
    """One pass over a fresh superuser connection."""

    with connect(settings, "admin", autocommit=True) as conn:
        return maintain(conn, settings, host=host)


def maintain_forever(
    settings_loader: Settings | Callable[[], Settings],
    interval: float,
    *,
    stop: threading.Event | None = None,
    first_delay: float = 0.0,
    host: HostFacts | None = None,
) -> None:
    """A pass every ``interval`` seconds until ``stop`` is set (SIGTERM/SIGINT set it when this
    runs in the main thread). A failing pass (the database restarting) is logged and retried at
    the next one. ``settings_loader`` may be a callable: settings are then re-read at every pass,
    so a rotated password is picked up."""
    import signal

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    delay = first_delay
    while not stop.wait(delay):
        delay = interval
        try:
            settings = settings_loader() if callable(settings_loader) else settings_loader
            result = maintain_once(settings, host)
        except Exception as exc:  # retried at the next pass
            log.warning("maintain failed: %s", first_line(exc))
            continue
        log.info(
            "maintain: partitions created %s, dropped %s; %d rollup rows; %d spans' messages indexed",
            result.partitions_created or "none",
            result.partitions_dropped or "none",
            result.rollup_rows,
            result.messages_indexed,
        )
