"""Retention per project, enforced by `llmobs db maintain` (:func:`enforce_retention`).

Each project keeps its rows for its own number of days (:mod:`llmobs.store.projects`). Two ways
to remove what expired, cheapest first:

* a whole daily partition is dropped when every row in it has expired for every project: its end
  lies before the cut-off of the project that keeps data longest, and before ``RETENTION_DAYS``
  (maintenance keeps a partition ready for every day of the accepted span window, which
  RETENTION_DAYS bounds: a partition inside it would be made again at the next pass). It is
  first detached
  CONCURRENTLY (a SHARE UPDATE EXCLUSIVE lock on the parent, which writers and readers do not
  wait for), then dropped (a lock on the detached table only);
* otherwise the expired rows of a project are deleted in batches of RETENTION_BATCH_ROWS, each its
  own short transaction on one partition (ctid lookup through the (project_id, time) index):
  WAL and lock time stay bounded per batch, and the row locks never meet a writer's inserts.

Rollups may outlive spans: their buckets expire with the project's rollup retention, deleted in
the same bounded batches.

Tables other than ``spans`` whose rows expire with a project's spans (daily partitions named
``<table>_pYYYYMMDD`` with ``project_id`` and a time column) are one line each in
:data:`RETAINED_TABLES`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TYPE_CHECKING

from psycopg import sql

from llmobs.store.projects import Project, RetentionDefaults, has_retention_settings, list_projects

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetainedTable:
    """A table partitioned by UTC day whose rows belong to a project and expire with its spans."""

    name: str
    time_column: str


#: Every table whose rows expire with a project's span retention.
RETAINED_TABLES: tuple[RetainedTable, ...] = (
    RetainedTable("spans", "start_time"),
    RetainedTable("log_records", "time"),
    RetainedTable("metric_points", "time"),
)
#: Rollup tables (plain PostgreSQL), whose buckets expire with a project's rollup retention.
ROLLUP_TABLES: tuple[str, ...] = ("spans_rollup_1m", "spans_rollup_1h")


@dataclass
class RetentionResult:
    partitions_dropped: list[str] = field(default_factory=list)
    #: table -> rows deleted in batches
    rows_deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    #: days beyond which whole partitions may go (the longest retention, at least RETENTION_DAYS)
    longest_retention_days: int = 0

    def count(self, table: str, rows: int) -> None:
        self.rows_deleted[table] = self.rows_deleted.get(table, 0) + rows
        self.batches += 1


@dataclass(frozen=True)
class Partition:
    name: str
    day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)


def partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The daily partitions ``<table>_pYYYYMMDD`` attached to ``table``, oldest first."""
    pattern = re.compile(rf"^{re.escape(table)}_p(\d{{8}})$")
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = %s::regclass AND NOT i.inhdetachpending ORDER BY c.relname""",
        (table,),
    ).fetchall()
    found = []
    for (name,) in rows:
        match = pattern.match(name)
        if match:
            found.append(Partition(name, datetime.strptime(match.group(1), "%Y%m%d").date()))
    return found


def _finish_interrupted_detaches(conn: psycopg.Connection, table: str, result: RetentionResult) -> None:
    """A DETACH CONCURRENTLY that was interrupted leaves its partition 'detach pending': finish
    it and drop the partition, as the interrupted pass meant to."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = %s::regclass AND i.inhdetachpending""",
        (table,),
    ).fetchall()
    for (name,) in rows:
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(sql.Identifier(table), sql.Identifier(name))
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        result.partitions_dropped.append(name)


def drop_partition(conn: psycopg.Connection, table: str, name: str) -> None:
    """Detach partition ``name`` concurrently (writers and readers of ``table`` keep going), then
    drop it. ``conn`` must be in autocommit (DETACH CONCURRENTLY runs outside a transaction)."""
    conn.execute(
        sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(sql.Identifier(table), sql.Identifier(name))
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def delete_in_batches(
    conn: psycopg.Connection,
    relation: str,
    where: sql.Composable,
    params: tuple,
    batch_rows: int,
    on_batch: Callable[[int], None],
) -> int:
    """Delete the rows of ``relation`` (a plain table or one partition) matching ``where``, at
    most ``batch_rows`` per statement, each statement its own transaction (``conn`` is in
    autocommit), until none is left. Returns the rows deleted; ``on_batch`` hears each count."""
    statement = sql.SQL(
        "DELETE FROM {rel} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {rel} WHERE {where} LIMIT {limit}))"
    ).format(rel=sql.Identifier(relation), where=where, limit=sql.Literal(batch_rows))
    total = 0
    while True:
        deleted = conn.execute(statement, params).rowcount
        on_batch(deleted)
        total += deleted
        if deleted < batch_rows:
            return total


def _expired(time_column: str) -> sql.Composable:
    return sql.SQL("project_id = %s AND {} < %s").format(sql.Identifier(time_column))


def _projects(conn: psycopg.Connection, defaults: RetentionDefaults) -> list[Project]:
    """Every project with its retention; none before migration 0090 is applied (a maintenance
    service newer than the schema then keeps to RETENTION_DAYS, by whole partitions only)."""
    if not has_retention_settings(conn):
        log.warning("per-project retention needs `llmobs db migrate`; keeping RETENTION_DAYS for every project")
        return []
    return list_projects(conn, defaults)


def _longest(projects: list[Project], defaults: RetentionDefaults) -> int:
    """Days beyond which nothing is kept: the longest retention of any project, and at least
    RETENTION_DAYS (the partitions of the accepted span window stay; their expired rows go by
    batches)."""
    return max([defaults.retention_days, *(p.retention_days for p in projects)])


def enforce_retention(conn: psycopg.Connection, settings: Settings, *, now: datetime | None = None) -> RetentionResult:
    """Remove what expired, per project (plain PostgreSQL). ``conn`` is an autocommit superuser
    connection. Safe to interrupt: every step is committed on its own, and a pass resumes where
    the previous one stopped."""
    now = now or datetime.now(UTC)
    defaults = RetentionDefaults.from_settings(settings)
    batch_rows = settings.get_int("RETENTION_BATCH_ROWS")
    projects = _projects(conn, defaults)
    result = RetentionResult(longest_retention_days=_longest(projects, defaults))
    drop_before = now - timedelta(days=result.longest_retention_days)
    for table in RETAINED_TABLES:
        _finish_interrupted_detaches(conn, table.name, result)
        kept = []
        for part in partitions(conn, table.name):
            if part.end <= drop_before:
                log.info("dropping partition %s (every row expired for every project)", part.name)
                drop_partition(conn, table.name, part.name)
                result.partitions_dropped.append(part.name)
            else:
                kept.append(part)
        for project in projects:
            cutoff = project.span_cutoff(now)
            if table.name == "spans" and (project.oldest_span is None or project.oldest_span >= cutoff):
                continue  # nothing of this project has expired
            for part in kept:
                if part.start < cutoff:
                    delete_in_batches(
                        conn,
                        part.name,
                        _expired(table.time_column),
                        (project.id, cutoff),
                        batch_rows,
                        partial(result.count, table.name),
                    )
    for project in projects:
        rollup_cutoff = project.rollup_cutoff(now)
        if rollup_cutoff is None:
            continue
        for rollup in ROLLUP_TABLES:
            delete_in_batches(
                conn,
                rollup,
                _expired("bucket"),
                (project.id, rollup_cutoff),
                batch_rows,
                partial(result.count, rollup),
            )
    return result


def timescale_retention(conn: psycopg.Connection, settings: Settings, *, now: datetime | None = None) -> None:
    """TimescaleDB: its retention policy drops chunks past the longest retention of any project;
    the spans of projects that keep less are deleted in windows of an hour, each its own
    transaction (chunks are not addressed one by one: compressed ones take deletes only through
    the hypertable). Rollups (continuous aggregates) get a policy when every project bounds them."""
    now = now or datetime.now(UTC)
    defaults = RetentionDefaults.from_settings(settings)
    projects = _projects(conn, defaults)
    longest = _longest(projects, defaults)
    conn.execute("SELECT remove_retention_policy('spans', if_exists => true)")
    conn.execute("SELECT add_retention_policy('spans', %s::interval)", (f"{longest} days",))
    for project in projects:
        cutoff = project.span_cutoff(now)
        window = project.oldest_span
        while window is not None and window < cutoff:
            upper = min(window + timedelta(hours=1), cutoff)
            conn.execute(
                "DELETE FROM spans WHERE project_id = %s AND start_time >= %s AND start_time < %s",
                (project.id, window, upper),
            )
            window = upper
    bounded = [p.rollup_retention_days for p in projects if p.rollup_retention_days is not None]
    for rollup in ROLLUP_TABLES:
        conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (rollup,))
        if bounded and len(bounded) == len(projects):
            conn.execute("SELECT add_retention_policy(%s, %s::interval)", (rollup, f"{max(bounded)} days"))
