"""The backups as rows of ``llmobs_backups`` (migration 0022): what the Operations dashboard and
`llmobs status` of the compose runtime read (there, the repository is in a volume the host does
not see). The repository stays the truth: rows are written after the fact, best-effort, and
re-synced after a restore (which rewinds the table with the rest of the database)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llmobs.backup.attempts import FailedAttempt
from llmobs.backup.pgclient import admin_connection
from llmobs.errors import LlmobsError
from llmobs.store.db import first_line

if TYPE_CHECKING:
    import psycopg

    from llmobs.backup.repository import BackupEntry
    from llmobs.config import Settings

log = logging.getLogger(__name__)

#: what the rows stand for: the backups of the database itself
RECORDED_TYPES = ("physical", "logical")

_UPSERT = """INSERT INTO llmobs_backups (id, kind, started_at, finished_at, status, size_bytes, location)
             VALUES (%s, %s, %s, %s, %s, %s, %s)
             ON CONFLICT (id) DO UPDATE SET finished_at = EXCLUDED.finished_at, status = EXCLUDED.status,
                 size_bytes = EXCLUDED.size_bytes, location = EXCLUDED.location"""


_FAILED = """INSERT INTO llmobs_backups (id, kind, started_at, finished_at, status, step, error)
              VALUES (%s, %s, now(), now(), 'failed', %s, %s)
              ON CONFLICT (id) DO UPDATE SET finished_at = now(), status = 'failed', step = EXCLUDED.step,
                  error = EXCLUDED.error"""


def _has_table(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('llmobs_backups') IS NOT NULL").fetchone()
    return bool(row and row[0])


def record_backups(settings: Settings, entries: Iterable[BackupEntry], *, forget: Iterable[str] = ()) -> None:
    """Upsert a row per database backup (status ``failed`` when its verification failed) and
    delete the rows of ``forget`` (backups that no longer exist anywhere)."""

    rows = [
        (
            e.id,
            e.type,
            e.manifest.started_at,
            e.manifest.finished_at,
            "failed" if e.manifest.verification and not e.manifest.verification.get("ok") else "ok",
            e.manifest.size_bytes,
            ",".join(e.locations),
        )
        for e in entries
        if e.type in RECORDED_TYPES
    ]
    gone = list(forget)
    if not rows and not gone:
        return
    try:
        with admin_connection(settings) as conn:
            if not _has_table(conn):
                return
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.executemany(_UPSERT, rows)
                if gone:
                    conn.execute("DELETE FROM llmobs_backups WHERE id = ANY(%s)", (gone,))
    except LlmobsError as exc:
        log.warning("could not record backups in the database: %s", exc.message)
    except Exception as exc:  # psycopg errors: the backups stand, only their rows are missing
        log.warning("could not record backups in the database: %s", first_line(exc))


def record_failed_attempt(settings: Settings, backup_id: str, kind: str, step: str, error: str) -> None:
    """A row for a failed backup attempt (status ``failed`` with its step and error), read by
    `status` where the repository is out of sight (compose). Best-effort, as ``record_backups``."""
    from llmobs.backup.pgclient import admin_connection
    from llmobs.store.db import first_line

    if kind not in RECORDED_TYPES:
        return
    try:
        with admin_connection(settings) as conn:
            if _has_table(conn):
                conn.execute(_FAILED, (backup_id, kind, step, error))
    except LlmobsError as exc:
        log.warning("could not record the failed backup in the database: %s", exc.message)
    except Exception as exc:  # psycopg errors, e.g. the database is what failed
        log.warning("could not record the failed backup in the database: %s", first_line(exc))


def recorded_summary(conn: psycopg.Connection) -> dict[str, Any] | None:
    """Newest good backup per type, their count and the failed ones, from the rows (None without
    the table)."""
    if not _has_table(conn):
        return None
    newest = conn.execute(
        "SELECT DISTINCT ON (kind) kind, id, finished_at, size_bytes FROM llmobs_backups "
        "WHERE status = 'ok' AND finished_at IS NOT NULL ORDER BY kind, finished_at DESC"
    ).fetchall()
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'ok'), "
        "COALESCE(array_agg(id ORDER BY finished_at) FILTER (WHERE status = 'failed' AND step IS NULL), '{}') "
        "FROM llmobs_backups"
    ).fetchone()
    count, failed = row if row else (0, [])
    attempts = conn.execute(
        "SELECT id, kind, step, error, finished_at FROM llmobs_backups b WHERE status = 'failed' "
        "AND step IS NOT NULL AND finished_at > COALESCE((SELECT max(finished_at) FROM llmobs_backups o "
        "WHERE o.kind = b.kind AND o.status = 'ok'), '-infinity') ORDER BY finished_at"
    ).fetchall()
    return {
        "newest": {kind: (bid, finished, size) for kind, bid, finished, size in newest},
        "count": count,
        "failed": list(failed),
        "failed_attempts": [FailedAttempt(bid, kind, step, error, at) for bid, kind, step, error, at in attempts],
    }
