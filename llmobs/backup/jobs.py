"""The backup operations as commands and the scheduler run them: each takes the backup lock,
so two never overlap (a second one gets AlreadyRunning, exit code 3)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmobs.backup.attempts import FailedAttempt, StepTracker, failed_attempts, forget_before, recording_failure
from llmobs.backup.grafana_backup import create_grafana
from llmobs.backup.job_env import in_job
from llmobs.backup.lock import backup_lock
from llmobs.backup.logical import create_logical
from llmobs.backup.manifest import BACKUP_TYPES, Manifest, new_backup_id
from llmobs.backup.paths import share_with_group
from llmobs.backup.pgclient import admin_connection, binaries_for
from llmobs.backup.physical import create_physical, finish_backup_dir
from llmobs.backup.pitr import WalIndex, merge_windows
from llmobs.backup.records import record_backups, record_failed_attempt
from llmobs.backup.redis_backup import create_redis
from llmobs.backup.repository import BackupEntry, DamagedBackup, Repository
from llmobs.backup.retention import PruneResult, RetentionPolicy, prune
from llmobs.backup.verify import VerifyResult, backup_own_segments, damaged_result, verify_backup
from llmobs.backup.wal import history_name, parse_history
from llmobs.errors import LlmobsError, UsageError
from llmobs.store import audit
from llmobs.store.db import first_line

if TYPE_CHECKING:
    from llmobs.backup.pitr import Window
    from llmobs.config import Settings
    from llmobs.progress import Progress

log = logging.getLogger(__name__)


def create_backup(
    settings: Settings,
    backup_type: str,
    progress: Progress,
    *,
    upload: bool = True,
    repo: Repository | None = None,
    from_replica: bool | None = None,
) -> BackupEntry:
    """Take one backup into the local repository, then copy it (and new WAL) to S3. A physical
    one reads from a replica when ``from_replica`` (None: the setting BACKUP_FROM)."""
    if backup_type not in BACKUP_TYPES:
        raise UsageError(f"unknown backup type {backup_type!r}; choose one of {', '.join(BACKUP_TYPES)}")
    repo = repo or Repository.from_settings(settings)
    repo.paths.ensure()
    with backup_lock(repo.paths.lock_file, f"backup {backup_type}"):
        _remove_unfinished(repo)
        backup_id = new_backup_id(backup_type, taken={e.id for e in repo.backups(remote=False)})
        tracker = StepTracker(progress)
        try:
            with recording_failure(repo.paths.backup_dir, backup_id, backup_type, tracker):
                replica = settings.get_str("BACKUP_FROM") == "replica" if from_replica is None else from_replica
                return _take_backup(settings, repo, backup_id, backup_type, tracker, upload=upload, replica=replica)
        except BaseException as exc:
            record_failed_attempt(settings, backup_id, backup_type, tracker.step_name, first_line(exc))
            raise


def _take_backup(
    settings: Settings,
    repo: Repository,
    backup_id: str,
    backup_type: str,
    progress: Progress,
    *,
    upload: bool,
    replica: bool = False,
) -> BackupEntry:
    work = repo.paths.backup_dir / f".{backup_id}.partial"
    work.mkdir()
    try:
        manifest = _creator(settings, backup_type, replica)(work, backup_id, progress)
        finish_backup_dir(work, repo.local_dir(backup_id), manifest)
        if in_job():
            share_with_group(repo.local_dir(backup_id))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    entry = BackupEntry(manifest, ["local"])
    progress.done(f"backup {backup_id}: {len(manifest.files)} file(s), {manifest.size_bytes} bytes")
    if upload and repo.s3 is not None:
        progress.step(f"Uploading {backup_id} to {repo.s3.describe()}")
        repo.upload(entry)
        shipped = repo.ship_wal()
        progress.done(f"uploaded {backup_id} and {len(shipped)} WAL file(s)")
    record_backups(settings, [entry])
    if manifest.type == "physical":
        _check_wal_archived(repo, manifest, progress)
    return entry


def _check_wal_archived(repo: Repository, manifest: Manifest, progress: Progress) -> None:
    """The backup is of use for point-in-time recovery only once the archive holds its WAL: else
    fail (exit 1, so cron monitoring sees it). The backup itself stays, restorable as taken."""
    progress.step("Checking that the WAL archive holds the backup's WAL")
    last = backup_own_segments(manifest)[-1]
    if not (repo.paths.wal_archive / last).is_file():
        raise LlmobsError(
            f"backup {manifest.id} was taken, but its WAL segment {last} did not reach the WAL archive: "
            "WAL archiving is broken, so no point in time after it can be restored",
            hint="see `llmobs status` (WAL archiver) and the PostgreSQL log; the backup is kept and restorable "
            "as taken, by its id",
        )
    progress.done(f"WAL archived up to {last}")


def _creator(settings: Settings, backup_type: str, replica: bool = False) -> Any:
    if backup_type == "physical":
        return lambda work, bid, progress: create_physical(settings, work, bid, progress, from_replica=replica)
    if backup_type == "logical":
        return lambda work, bid, progress: create_logical(settings, work, bid, progress)
    if backup_type == "redis":
        return lambda work, bid, progress: create_redis(settings, work, bid, progress)

    data_dir = settings.get_str("BACKUP_GRAFANA_DATA_DIR")
    if not data_dir:
        raise UsageError(
            "Grafana is not backed up here: BACKUP_GRAFANA_DATA_DIR is not set",
            hint="the local runtime runs no Grafana; the compose runtime sets it in its jobs",
        )
    from pathlib import Path

    return lambda work, bid, progress: create_grafana(Path(data_dir), work, bid, progress)


def _remove_unfinished(repo: Repository) -> None:
    """Directories of backups that never finished (the process died): ours, since we hold the lock."""
    for leftover in repo.paths.backup_dir.glob(".*.partial"):
        log.info("removing unfinished backup %s", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def ship_wal(settings: Settings, repo: Repository | None = None) -> list[str]:
    repo = repo or Repository.from_settings(settings)
    if repo.s3 is None:
        return []
    repo.paths.ensure()
    with backup_lock(repo.paths.lock_file, "ship WAL"):
        return repo.ship_wal()


def live_timeline(settings: Settings) -> int | None:
    """The running cluster's timeline, or None when it cannot be reached."""
    live = live_wal(settings)
    return live.timeline if live else None


@dataclass(frozen=True)
class LiveWal:
    """The running cluster's WAL beyond the archive: its timeline, that timeline's history (from
    its pg_wal: right after a restore the archive may not have it yet) and whether archiving
    works, so that what it has not archived yet will be (a point-in-time restore first switches
    WAL and waits for the archive)."""

    timeline: int
    history: list[tuple[int, int]] | None
    archiving: bool


def live_wal(settings: Settings) -> LiveWal | None:
    """None when the cluster cannot be reached."""
    try:
        with admin_connection(settings, dbname="postgres") as conn:
            row = conn.execute(
                "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), current_setting('archive_mode') <> 'off' "
                "AND (last_failed_time IS NULL OR last_failed_time < last_archived_time) FROM pg_stat_archiver"
            ).fetchone()
            assert row is not None
            timeline, archiving = int(row[0]), bool(row[1])
            history = None
            if timeline > 1:
                text = conn.execute(
                    "SELECT pg_read_file(%s::text, 0, 1048576, true)", (f"pg_wal/{history_name(timeline)}",)
                ).fetchone()
                history = parse_history(text[0]) if text and text[0] else None
    except LlmobsError:
        return None
    return LiveWal(timeline, history, archiving)


def verify_backups(
    settings: Settings,
    backup_ids: list[str] | None,
    progress: Progress,
    *,
    newest_only: bool = False,
    repo: Repository | None = None,
) -> list[VerifyResult]:
    """Verify the given backups (all when None; the newest of each type with ``newest_only``)."""

    repo = repo or Repository.from_settings(settings)
    repo.paths.ensure()
    with backup_lock(repo.paths.lock_file, "verify"):
        entries = repo.backups()
        if backup_ids:
            known = {e.id: e for e in entries}
            damaged_ids = {d.id for d in repo.damaged()}
            missing = [i for i in backup_ids if i not in known and i not in damaged_ids]
            if missing:
                raise UsageError(f"no backup with id {', '.join(missing)}", hint="`llmobs backup list`")
            entries = [known[i] for i in backup_ids if i in known]
        elif newest_only:
            entries = [
                [e for e in entries if e.type == t][-1] for t in BACKUP_TYPES if any(e.type == t for e in entries)
            ]
        majors = [e.manifest.pg_major for e in entries if e.manifest.pg_major]
        binaries = binaries_for(settings, majors[-1]) if majors else None
        wal_files = timeline = None
        if binaries is not None and any(e.type == "physical" for e in entries):
            index = WalIndex(repo, binaries)
            wal_files = index.files
            timeline = live_timeline(settings) or index.newest_timeline()
        # every backup means the damaged ones too: they fail, named, rather than go unseen
        results = [damaged_result(d) for d in repo.damaged() if not backup_ids or d.id in backup_ids]
        for result in results:
            progress.warn(f"{result.backup_id}: FAILED: {result.checks[0].detail}")
        for entry in entries:
            progress.step(f"Verifying {entry.id}")
            result = verify_backup(repo, entry, binaries, wal_files=wal_files, timeline=timeline)
            (progress.done if result.ok else progress.warn)(
                f"{entry.id}: "
                + ("verified" if result.ok else "FAILED: " + "; ".join(c.detail for c in result.checks if not c.ok))
            )
            results.append(result)
        record_backups(settings, entries)
        return results


def prune_backups(
    settings: Settings,
    *,
    dry_run: bool,
    now: datetime | None = None,
    repo: Repository | None = None,
    max_age_days: int | None = None,
) -> PruneResult:
    """Prune by the settings' policy; ``max_age_days`` overrides BACKUP_PRUNE_MAX_AGE_DAYS."""
    repo = repo or Repository.from_settings(settings)
    repo.paths.ensure()
    policy = RetentionPolicy.from_settings(settings, max_age_days=max_age_days)
    with backup_lock(repo.paths.lock_file, "prune"):
        result = prune(repo, policy, now or datetime.now(UTC), dry_run=dry_run)
        kept = repo.backups(remote=False)
        if not dry_run and kept:  # failures older than every kept backup are history
            forget_before(repo.paths.backup_dir, kept[0].manifest.finished_at)
    if not dry_run and (result.deleted or result.wal_deleted):
        record_backups(settings, [], forget={backup_id for backup_id, _ in result.deleted})
        audit_action(settings, "backup.prune", None, result.to_dict())
    return result


def audit_action(settings: Settings, action: str, target: str | None, details: dict[str, Any]) -> None:
    try:
        with admin_connection(settings) as conn:
            audit.record(
                conn, action, actor=audit.cli_actor(), target=target, source=audit.cli_source(), details=details
            )
    except LlmobsError as exc:
        log.warning("could not write the audit record of %s: %s", action, exc.message)


@dataclass
class Listing:
    backups: list[BackupEntry]
    windows: list[Window] = field(default_factory=list)
    timeline: int | None = None
    damaged: list[DamagedBackup] = field(default_factory=list)
    failed_attempts: list[FailedAttempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for e in self.backups:
            m = e.manifest
            row = {
                "id": m.id,
                "type": m.type,
                "started_at": m.started_at.isoformat(),
                "finished_at": m.finished_at.isoformat(),
                "size_bytes": m.size_bytes,
                "locations": e.locations,
                "pg_version": m.pg_version,
                "schema_version": m.schema_version,
                "verified": None if m.verification is None else bool(m.verification.get("ok")),
                "verified_at": (m.verification or {}).get("at"),
            }
            if m.type == "physical":
                own = backup_own_segments(m)
                row.update(
                    timeline=m.timeline, start_lsn=m.start_lsn, end_lsn=m.end_lsn, wal_start=own[0], wal_end=own[-1]
                )
            rows.append(row)
        return {
            "backups": rows,
            "damaged": [d.to_dict() for d in self.damaged],
            "failed_attempts": [a.to_dict() for a in self.failed_attempts],
            "timeline": self.timeline,
            "restorable": {
                "earliest": self.windows[0].earliest.isoformat() if self.windows else None,
                "latest": self.windows[-1].latest.isoformat() if self.windows else None,
                "windows": [w.to_dict() for w in self.windows],
            },
        }


def list_backups(settings: Settings, *, remote: bool = True, repo: Repository | None = None) -> Listing:
    repo = repo or Repository.from_settings(settings, use_s3=remote)
    entries = repo.backups(remote=remote)
    listing = Listing(
        entries, damaged=repo.damaged(remote=remote), failed_attempts=failed_attempts(repo.paths.backup_dir)
    )
    physical = [e for e in entries if e.type == "physical"]
    if physical:
        index = WalIndex(repo, binaries_for(settings, physical[-1].manifest.pg_major), remote=remote)
        live = live_wal(settings)
        listing.timeline = live.timeline if live else index.newest_timeline()
        pending_until = None
        if live is not None:
            if live.history is not None:
                index.histories.setdefault(live.timeline, live.history)
            pending_until = datetime.now(UTC) if live.archiving else None
        listing.windows = merge_windows(
            [w for e in physical if (w := index.window(e, listing.timeline, pending_until=pending_until)) is not None]
        )
    return listing
