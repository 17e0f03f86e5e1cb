"""Periodic database upkeep: `llmobs db maintain`.

Plain PostgreSQL: create daily span partitions ahead of time, drop whole partitions older than
``RETENTION_DAYS``, and refresh the minute/hour rollups from the last watermark. TimescaleDB does
the same with its own policies, which this keeps in step with the settings.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

log = logging.getLogger(__name__)

#: Late spans (start time before the watermark) are folded in if they arrive within this window.
ROLLUP_LOOKBACK = timedelta(minutes=10)
_PARTITION_RE = re.compile(r"^spans_p(\d{8})$")


@dataclass
class MaintainResult:
    timescale: bool
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    rollup_rows: int = 0
    rollup_from: datetime | None = None
    #: spans whose messages were added to the search index (message_words) by this pass
    messages_indexed: int = 0


def timescale_enabled(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT llmobs_timescale_enabled()").fetchone()
    return bool(row and row[0])


def ensure_partitions(conn: psycopg.Connection, days: list[date]) -> list[str]:
    created = []
    for day in sorted(set(days)):
        row = conn.execute("SELECT llmobs_ensure_span_partition(%s)", (day,)).fetchone()
        if row and row[0]:
            created.append(f"spans_p{day:%Y%m%d}")
    return created


def span_partitions(conn: psycopg.Connection) -> list[tuple[str, date]]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'spans'::regclass ORDER BY c.relname"""
    ).fetchall()
    found = []
    for (name,) in rows:
        match = _PARTITION_RE.match(name)
        if match:
            found.append((name, datetime.strptime(match.group(1), "%Y%m%d").date()))
    return found


def maintain(conn: psycopg.Connection, settings: Settings, *, now: datetime | None = None) -> MaintainResult:
    """One maintenance pass. ``conn`` is an autocommit superuser connection."""
    from psycopg import sql

    now = now or datetime.now(UTC)
    retention = settings.get_int("RETENTION_DAYS")
    result = MaintainResult(timescale=timescale_enabled(conn))
    if result.timescale:
        conn.execute("SELECT remove_retention_policy('spans', if_exists => true)")
        conn.execute("SELECT add_retention_policy('spans', %s::interval)", (f"{retention} days",))
        _index_messages(conn, now, result)
        return result

    today = now.date()
    ahead = settings.get_int("PARTITION_PREMAKE_DAYS")
    result.partitions_created = ensure_partitions(conn, [today + timedelta(days=d) for d in range(-1, ahead + 1)])
    cutoff = today - timedelta(days=retention)
    for name, day in span_partitions(conn):
        if day < cutoff:
            log.info("dropping span partition %s (older than %d days)", name, retention)
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            result.partitions_dropped.append(name)

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


def maintain_once(settings: Settings) -> MaintainResult:
    """One pass over a fresh superuser connection."""
    from llmobs.store.db import connect

    with connect(settings, "admin", autocommit=True) as conn:
        return maintain(conn, settings)


def maintain_forever(
    settings_loader: Settings | Callable[[], Settings],
    interval: float,
    *,
    stop: threading.Event | None = None,
    first_delay: float = 0.0,
) -> None:
    """A pass every ``interval`` seconds until ``stop`` is set (SIGTERM/SIGINT set it when this
    runs in the main thread). A failing pass (the database restarting) is logged and retried at
    the next one. ``settings_loader`` may be a callable: settings are then re-read at every pass,
    so a rotated password is picked up."""
    import signal

    from llmobs.store.db import first_line

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
            result = maintain_once(settings)
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
