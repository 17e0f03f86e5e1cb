"""Projects and their retention: what ``llmobs projects list|show|set`` and ``/api/v1/project`` show
and change.

A project keeps its spans ``retention_days`` (NULL: the global RETENTION_DAYS) and its rollups
``rollup_retention_days`` (NULL: ROLLUP_RETENTION_DAYS, where 0 means forever). Rollups never
expire before spans. Changing a project's retention is an audited admin action.

The SQL lives here once; the plain functions run it on a sync connection (CLI) and the ``a``
functions on an async one (API), as in :mod:`llmobs.store.audit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from llmobs.errors import UsageError
from llmobs.store import audit

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

#: Bounds of a retention in days (the CHECK of init-sql/0090).
MAX_RETENTION_DAYS = 36500


@dataclass(frozen=True)
class RetentionDefaults:
    """The global settings a project without its own retention follows."""

    retention_days: int
    #: None: rollups are kept forever.
    rollup_retention_days: int | None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionDefaults:
        rollups = settings.get_int("ROLLUP_RETENTION_DAYS")
        return cls(settings.get_int("RETENTION_DAYS"), rollups or None)


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    created_at: datetime
    #: The project's own settings; None: it follows the global default.
    own_retention_days: int | None
    own_rollup_retention_days: int | None
    #: Start time of the oldest span stored (None: no spans).
    oldest_span: datetime | None
    #: What applies, with the defaults filled in (rollups: None is forever).
    retention_days: int
    rollup_retention_days: int | None

    def span_cutoff(self, now: datetime) -> datetime:
        """Spans that started before this have expired."""
        return now - timedelta(days=self.retention_days)

    def rollup_cutoff(self, now: datetime) -> datetime | None:
        """Rollup buckets before this have expired (None: never)."""
        return None if self.rollup_retention_days is None else now - timedelta(days=self.rollup_retention_days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": self.created_at,
            "retention_days": self.retention_days,
            "retention_days_source": "project" if self.own_retention_days is not None else "default",
            "rollup_retention_days": self.rollup_retention_days,
            "rollup_retention_days_source": "project" if self.own_rollup_retention_days is not None else "default",
            "oldest_span": self.oldest_span,
        }


# The oldest span of each project: one index probe per partition (spans_time_idx), not a scan.
_SELECT = """SELECT p.id, p.name, p.created_at, p.retention_days, p.rollup_retention_days,
                    (SELECT s.start_time FROM spans s WHERE s.project_id = p.id ORDER BY s.start_time LIMIT 1)
             FROM projects p"""
_LIST_SQL = _SELECT + " ORDER BY p.name"
_GET_SQL = _SELECT + " WHERE p.name = %s"
_GET_ID_SQL = _SELECT + " WHERE p.id = %s"
_UPDATE_SQL = "UPDATE projects SET retention_days = %s, rollup_retention_days = %s WHERE id = %s"


def _project(row: Any, defaults: RetentionDefaults) -> Project:
    pid, name, created, own_days, own_rollup, oldest = tuple(row.values()) if isinstance(row, dict) else tuple(row)
    days = own_days if own_days is not None else defaults.retention_days
    rollup = own_rollup if own_rollup is not None else defaults.rollup_retention_days
    if rollup is not None:
        rollup = max(rollup, days)  # rollups never expire before the spans they summarize
    return Project(pid, name, created, own_days, own_rollup, oldest, days, rollup)


def has_retention_settings(conn: Any) -> bool:
    """Whether the schema has per-project retention (migration 0090): a stack may run code newer
    than its schema until `llmobs db migrate` runs."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('projects') "
        "AND attname = 'retention_days' AND NOT attisdropped)"
    ).fetchone()
    return bool(row and row[0])


def list_projects(conn: psycopg.Connection, defaults: RetentionDefaults) -> list[Project]:
    """Every project, by name."""
    return [_project(r, defaults) for r in conn.execute(_LIST_SQL).fetchall()]


def get_project(conn: psycopg.Connection, name: str, defaults: RetentionDefaults) -> Project:
    """Project ``name``; UsageError (exit 2) when there is none."""
    row = conn.execute(_GET_SQL, (name,)).fetchone()
    if row is None:
        raise UsageError(f"no project named {name!r}", hint="`llmobs projects list` shows the projects")
    return _project(row, defaults)


async def aget_project_by_id(conn: psycopg.AsyncConnection, project_id: int, defaults: RetentionDefaults) -> Project:
    """The project of an API key (it exists: the key's row references it)."""
    cur = await conn.execute(_GET_ID_SQL, (project_id,))
    row = await cur.fetchone()
    assert row is not None
    return _project(row, defaults)


@dataclass(frozen=True)
class RetentionChange:
    """New retention settings of a project: a number of days, or None to follow the default."""

    retention_days: int | None
    rollup_retention_days: int | None

    def check(self, defaults: RetentionDefaults) -> None:
        """UsageError when a value is out of range or rollups would expire before spans."""
        for label, value in (("retention", self.retention_days), ("rollup retention", self.rollup_retention_days)):
            if value is not None and not 1 <= value <= MAX_RETENTION_DAYS:
                raise UsageError(f"{label} must be between 1 and {MAX_RETENTION_DAYS} days, not {value}")
        days = self.retention_days if self.retention_days is not None else defaults.retention_days
        if self.rollup_retention_days is not None and self.rollup_retention_days < days:
            raise UsageError(
                f"rollup retention ({self.rollup_retention_days} d) is shorter than span retention ({days} d)",
                hint="rollups summarize spans and may be kept longer, never shorter",
            )


def _audit_details(before: Project, change: RetentionChange) -> dict[str, Any]:
    return {
        "retention_days": [before.own_retention_days, change.retention_days],
        "rollup_retention_days": [before.own_rollup_retention_days, change.rollup_retention_days],
    }


def set_retention(
    conn: psycopg.Connection,
    name: str,
    change: RetentionChange,
    defaults: RetentionDefaults,
    *,
    actor: str,
    source: str | None,
) -> Project:
    """Store ``change`` for project ``name`` and audit it, in one transaction; the project after.
    UsageError for an unknown project or invalid values."""
    change.check(defaults)
    with conn.transaction():
        before = get_project(conn, name, defaults)
        conn.execute(_UPDATE_SQL, (change.retention_days, change.rollup_retention_days, before.id))
        audit.record(
            conn,
            "project.retention",
            actor=actor,
            project_id=before.id,
            target=name,
            source=source,
            details=_audit_details(before, change),
        )
        return get_project(conn, name, defaults)


async def aset_retention(
    conn: psycopg.AsyncConnection,
    project_id: int,
    change: RetentionChange,
    defaults: RetentionDefaults,
    *,
    actor: str,
    source: str | None,
) -> Project:
    """:func:`set_retention` for the API: the key's project, in the caller's transaction."""
    change.check(defaults)
    before = await aget_project_by_id(conn, project_id, defaults)
    await conn.execute(_UPDATE_SQL, (change.retention_days, change.rollup_retention_days, project_id))
    await audit.arecord(
        conn,
        "project.retention",
        actor=actor,
        project_id=project_id,
        target=before.name,
        source=source,
        details=_audit_details(before, change),
    )
    return await aget_project_by_id(conn, project_id, defaults)
