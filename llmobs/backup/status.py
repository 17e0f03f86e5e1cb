"""Backup facts for `llmobs status`: cheap (no S3 call). The local runtime reads the manifests
of its backup directory; the compose runtime, whose repository is in a volume, reads the rows
its backup jobs write into ``llmobs_backups`` (``records.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmobs.backup.attempts import FailedAttempt, failed_attempts, unresolved
from llmobs.backup.job_env import in_job
from llmobs.backup.records import recorded_summary
from llmobs.backup.repository import Repository
from llmobs.errors import LlmobsError
from llmobs.stack.runtime import resolve_runtime
from llmobs.store.db import connect, first_line

if TYPE_CHECKING:
    from llmobs.config import Settings

DATABASE_TYPES = ("physical", "logical")

#: newest good backup of a type: (id, finished at, size in bytes)
Newest = tuple[str, datetime, int | None]


def backup_facts(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """The newest good backup of each type with its age, whether the newest database backup is
    older than BACKUP_MAX_AGE_HOURS allows, and ``warnings`` for `status` to show (a stack that
    has never been backed up is not warned about: that is a choice, not a failure).

    ``available`` is False when the facts cannot be read from here."""

    now = now or datetime.now(UTC)
    if not in_job() and resolve_runtime(settings) == "compose":
        return _from_database(settings, now)
    return _from_directory(settings, now)


def _from_directory(settings: Settings, now: datetime) -> dict[str, Any]:
    try:
        repo = Repository.from_settings(settings, use_s3=False)
    except LlmobsError as exc:
        return {"available": False, "reason": exc.message, "warnings": []}
    if not repo.paths.backup_dir.is_dir():
        return {"available": False, "reason": f"{repo.paths.backup_dir} does not exist", "backups": 0, "warnings": []}
    every = repo.backups(remote=False)
    failed = [e.id for e in every if e.manifest.verification and not e.manifest.verification.get("ok")]
    entries = [e for e in every if e.id not in failed]
    newest: dict[str, Newest] = {e.type: (e.id, e.manifest.finished_at, e.manifest.size_bytes) for e in entries}
    attempts = unresolved(failed_attempts(repo.paths.backup_dir), {k: v[1] for k, v in newest.items()})
    summary = _summary(settings, now, newest, len(entries), failed, attempts, source="backup directory")
    damaged = repo.damaged(remote=False)
    summary["damaged"] = [d.to_dict() for d in damaged]
    summary["warnings"] += [f"backup {d.id} is damaged: {d.problem}" for d in damaged]
    return summary


def _from_database(settings: Settings, now: datetime) -> dict[str, Any]:
    try:
        with connect(settings, "admin", connect_timeout=2) as conn:
            conn.execute("SET statement_timeout = '500ms'")
            found = recorded_summary(conn)
    except Exception as exc:  # the database is down or refuses: no facts, no failure
        return {"available": False, "reason": f"the database does not answer ({first_line(exc)})", "warnings": []}
    if found is None:
        return {
            "available": False,
            "reason": "the database has no llmobs_backups table (run `llmobs db migrate`)",
            "warnings": [],
        }
    return _summary(
        settings,
        now,
        found["newest"],
        int(found["count"]),
        list(found["failed"]),
        list(found["failed_attempts"]),
        source="llmobs_backups",
    )


def _summary(
    settings: Settings,
    now: datetime,
    newest: Mapping[str, Newest],
    count: int,
    failed: list[str],
    attempts: list[FailedAttempt],
    *,
    source: str,
) -> dict[str, Any]:
    max_age_hours = settings.get_int("BACKUP_MAX_AGE_HOURS")
    db = [finished for kind, (_, finished, _) in newest.items() if kind in DATABASE_TYPES]
    last = max(db) if db else None
    age = (now - last).total_seconds() if last else None
    too_old = age is not None and age > max_age_hours * 3600
    warnings = []
    if too_old:
        assert age is not None
        warnings.append(
            f"the newest database backup is {age / 3600:.1f} h old (BACKUP_MAX_AGE_HOURS is {max_age_hours})"
        )
    if failed:
        warnings.append(f"{len(failed)} backup(s) failed verification, newest {failed[-1]}")
    warnings += [f"the {a.type} backup {a.id} failed at {a.step!r}: {a.error}" for a in attempts]
    return {
        "available": True,
        "source": source,
        "backups": count,
        "newest": {
            kind: {
                "id": bid,
                "finished_at": finished.isoformat(),
                "age_seconds": round((now - finished).total_seconds()),
                "size_bytes": size,
            }
            for kind, (bid, finished, size) in newest.items()
        },
        "last_backup_at": last.isoformat() if last else None,
        "age_seconds": round(age) if age is not None else None,
        "max_age_hours": max_age_hours,
        "too_old": too_old,
        "failed_verification": failed,
        "failed_attempts": [a.to_dict() for a in attempts],
        "s3": bool(settings.get_str("BACKUP_S3_BUCKET")),
        "warnings": warnings,
    }
