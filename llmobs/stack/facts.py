"""Operator facts shown by `llmobs status`: what a person on call wants to see at a glance.

Each fact that signals trouble also adds a warning; a warning turns the stack "degraded".
Facts owned by higher layers (the backups) come in as a :data:`FactSource` from the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from llmobs.store.db import connect, first_line
from llmobs.store.projects import has_retention_settings

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger(__name__)

#: Reads one group of facts: a dict of values, with a ``warnings`` list for status to show.
FactSource = Callable[["Settings"], dict[str, Any]]


@dataclass
class Facts:
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def database_facts(settings: Settings, facts: Facts) -> None:
    """Size, recent ingest, schema version and the WAL archiver, from one short connection."""
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
        if has_retention_settings(conn):
            facts.values["projects"] = _project_facts(conn, settings)
        if _table_exists(conn, "llmobs_rollup_state"):
            maintenance_facts(conn, settings, facts)
        row = conn.execute(
            "SELECT archived_count, last_archived_time, failed_count, last_failed_time, "
            "current_setting('archive_mode') FROM pg_stat_archiver"
        ).fetchone()
    assert row is not None  # pg_stat_archiver always has one row
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


def _project_facts(conn: Any, settings: Settings) -> list[dict[str, Any]]:
    """Per project: its span retention and its oldest stored span."""
    from llmobs.store.projects import RetentionDefaults, list_projects

    return [
        {"name": p.name, "retention_days": p.retention_days, "oldest_span": p.oldest_span}
        for p in list_projects(conn, RetentionDefaults.from_settings(settings))
    ]


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


def alert_facts(settings: Settings, facts: Facts) -> None:
    """The alerts Alertmanager holds as firing (profile `monitoring`); each is a warning."""
    from llmobs.stack.monitoring import firing_alerts

    alerts = firing_alerts(settings)
    facts.values["alerts"] = alerts
    for alert in alerts:
        facts.warnings.append(f"alert {alert['name']} firing: {alert['summary'] or alert['labels']}")


def collect(
    settings: Settings,
    *,
    database_up: bool,
    sources: dict[str, FactSource] | None = None,
    alertmanager_up: bool = False,
) -> Facts:
    """The database's facts (when it is up), the firing alerts (when Alertmanager is up) and those
    of each named source (as ``values[name]``). A source, Alertmanager or database that fails adds
    a warning instead: facts never break `status`."""
    facts = Facts()
    if alertmanager_up:
        try:
            alert_facts(settings, facts)
        except (OSError, ValueError, KeyError) as exc:  # Alertmanager starting or answering oddly
            facts.warnings.append(f"alerts unavailable: {exc}")
    for name, source in (sources or {}).items():
        try:
            found = source(settings)
        except Exception as exc:  # e.g. a broken backup manifest
            log.warning("%s facts unavailable: %s", name, first_line(exc))
            facts.warnings.append(f"{name} facts unavailable: {first_line(exc)}")
            continue
        facts.warnings.extend(found.pop("warnings", []))
        facts.values[name] = found
    if database_up:
        try:
            database_facts(settings, facts)
        except Exception as exc:  # facts are best-effort; the service's own probe reports health
            log.warning("database facts unavailable: %s", first_line(exc))
            facts.warnings.append(f"database facts unavailable: {first_line(exc)}")
    return facts
