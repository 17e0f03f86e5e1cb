"""Operator facts shown by `llmobs status`: what a person on call wants to see at a glance.

Each fact that signals trouble also adds a warning; a warning turns the stack "degraded".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Facts:
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def database_facts(settings: Settings, facts: Facts) -> None:
    """Size, recent ingest, schema version and the WAL archiver, from one short connection."""
    from llmobs.store.db import connect

    with connect(settings, "admin", connect_timeout=2) as conn:
        conn.execute("SET statement_timeout = '500ms'")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        facts.values["database_size_bytes"] = row[0] if row else None
        if _table_exists(conn, "llmobs_schema_migrations"):
            row = conn.execute("SELECT max(version) FROM llmobs_schema_migrations").fetchone()
            facts.values["schema_version"] = row[0] if row else None
        if _table_exists(conn, "spans_rollup_1m"):
            # From the minute rollups (an index range scan), not a scan of today's spans.
            row = conn.execute(
                "SELECT COALESCE(sum(requests), 0) FROM spans_rollup_1m WHERE bucket > now() - interval '1 hour'"
            ).fetchone()
            facts.values["spans_last_hour"] = int(row[0]) if row else 0
        if _table_exists(conn, "llmobs_rollup_state"):
            maintenance_facts(conn, settings, facts)
        row = conn.execute(
            "SELECT archived_count, last_archived_time, failed_count, last_failed_time, "
            "current_setting('archive_mode') FROM pg_stat_archiver"
        ).fetchone()
    archived, last_ok, failed, last_failed, mode = row
    facts.values["wal_archiver"] = {
        "archive_mode": mode,
        "archived_count": archived,
        "last_archived_at": last_ok,
        "failed_count": failed,
        "last_failed_at": last_failed,
    }
    if mode == "off":
        facts.warnings.append("WAL archiving is off: point-in-time recovery is not possible")
    elif last_failed is not None and (last_ok is None or last_failed > last_ok):
        facts.warnings.append(f"WAL archiving is failing (last failure {_ago(last_failed)}, {failed} failures in all)")


def maintenance_facts(conn: Any, settings: Settings, facts: Facts) -> None:
    """When maintenance last succeeded (plain PostgreSQL: TimescaleDB runs its own jobs), and a
    warning when it is late (three passes missed) or today's span partition is missing."""
    row = conn.execute(
        """SELECT (SELECT refreshed_at FROM llmobs_rollup_state WHERE name = 'rollups'),
                  pg_postmaster_start_time(), now(), llmobs_timescale_enabled(),
                  to_regclass('spans_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NOT NULL"""
    ).fetchone()
    last_ok, started, now, timescale, today_ready = row
    if timescale:
        return
    facts.values["maintenance_last_ok_at"] = last_ok
    late = timedelta(seconds=3 * settings.get_int("MAINTAIN_INTERVAL_SECONDS") + 10)
    if last_ok is None and now - started > late:
        facts.warnings.append("database maintenance has never completed: see `llmobs db maintain`")
    elif last_ok is not None and now - last_ok > late:
        facts.warnings.append(
            f"database maintenance has not succeeded since {_ago(last_ok)}: partitions, rollups and "
            "retention are not kept up; see `llmobs db maintain`"
        )
    if not today_ready:
        facts.warnings.append("no span partition for today: spans are refused until `llmobs db maintain` succeeds")


def _table_exists(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _ago(when: datetime) -> str:
    seconds = (datetime.now(UTC) - when).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def backup_facts(settings: Settings, facts: Facts) -> None:
    from llmobs.backup.status import backup_facts as read_backup_facts

    found = read_backup_facts(settings)
    facts.warnings.extend(found.pop("warnings", []))
    facts.values["backup"] = found


def collect(settings: Settings, *, database_up: bool) -> Facts:
    facts = Facts()
    try:
        backup_facts(settings, facts)
    except Exception as exc:  # a broken manifest must not break `status`
        from llmobs.store.db import first_line

        log.warning("backup facts unavailable: %s", first_line(exc))
        facts.warnings.append(f"backup facts unavailable: {first_line(exc)}")
    if database_up:
        try:
            database_facts(settings, facts)
        except Exception as exc:  # facts are best-effort; the service's own probe reports health
            from llmobs.store.db import first_line

            log.warning("database facts unavailable: %s", first_line(exc))
            facts.warnings.append(f"database facts unavailable: {first_line(exc)}")
    return facts
