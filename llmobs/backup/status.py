"""Backup facts for `llmobs status`: cheap (local manifests only, no S3 call)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmobs.errors import LlmobsError

if TYPE_CHECKING:
    from llmobs.config import Settings

DATABASE_TYPES = ("physical", "logical")


def backup_facts(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """The newest good backup of each type with its age, whether the newest database backup is
    older than BACKUP_MAX_AGE_HOURS allows, and ``warnings`` for `status` to show (a stack that
    has never been backed up is not warned about: that is a choice, not a failure).

    ``available`` is False when this process cannot see the backup directory (the compose
    runtime keeps it in a volume)."""
    from llmobs.backup.repository import Repository

    now = now or datetime.now(UTC)
    max_age_hours = settings.get_int("BACKUP_MAX_AGE_HOURS")
    try:
        repo = Repository.from_settings(settings, use_s3=False)
    except LlmobsError as exc:
        return {"available": False, "reason": exc.message, "warnings": []}
    if not repo.paths.backup_dir.is_dir():
        return {"available": False, "reason": f"{repo.paths.backup_dir} does not exist",
                "backups": 0, "warnings": []}
    entries = [e for e in repo.backups(remote=False)
               if not (e.manifest.verification and not e.manifest.verification.get("ok"))]
    newest: dict[str, Any] = {}
    for e in entries:
        newest[e.type] = {"id": e.id, "finished_at": e.manifest.finished_at.isoformat(),
                          "age_seconds": round((now - e.manifest.finished_at).total_seconds()),
                          "size_bytes": e.manifest.size_bytes}
    db = [e for e in entries if e.type in DATABASE_TYPES]
    last = db[-1].manifest.finished_at if db else None
    age = (now - last).total_seconds() if last else None
    too_old = age is not None and age > max_age_hours * 3600
    warnings = []
    if too_old:
        warnings.append(f"the newest database backup is {age / 3600:.1f} h old (BACKUP_MAX_AGE_HOURS is "
                        f"{max_age_hours})")
    failed = [e.id for e in repo.backups(remote=False)
              if e.manifest.verification and not e.manifest.verification.get("ok")]
    if failed:
        warnings.append(f"{len(failed)} backup(s) failed verification, newest {failed[-1]}")
    return {
        "available": True, "backups": len(entries), "newest": newest,
        "last_backup_at": last.isoformat() if last else None, "age_seconds": round(age) if age is not None else None,
        "max_age_hours": max_age_hours, "too_old": too_old, "failed_verification": failed,
        "s3": bool(settings.get_str("BACKUP_S3_BUCKET")), "warnings": warnings,
    }
