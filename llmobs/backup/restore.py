"""Restores: a physical backup (as taken, or to a point in time), a logical dump, a Redis
snapshot, Grafana's data. Everything that can be checked is checked before anything is
touched; the data that was live is kept aside (renamed, never deleted) and put back if anything
fails.

Physical restore, in order:
 1. plan: choose the base backup and timeline, refuse a target outside the restorable window;
    verify the base's checksums; fetch WAL from S3 that the local archive lacks
 2. stage: unpack the base beside the live data directory, pg_verifybackup, recovery settings
 3. stop the services that write, then PostgreSQL
 4. swap: live directory -> ``<pgdata>.before-restore-<time>``, staged directory -> live
 5. start PostgreSQL in recovery, wait for promotion, check, reset the recovery settings
 6. restart the services that were running
A journal beside the data directory records the phase; see ``journal.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.backup.grafana_backup import ARCHIVE as GRAFANA_ARCHIVE
from llmobs.backup.grafana_backup import install_grafana
from llmobs.backup.job_env import in_job
from llmobs.backup.kept_aside import ASIDE_MARK, DB_MARK
from llmobs.backup.lock import backup_lock
from llmobs.backup.logical import DUMP_FILE, check_dump, restore_dump
from llmobs.backup.paths import BackupPaths, share_with_group
from llmobs.backup.pgclient import admin_connection, binaries_for
from llmobs.backup.pitr import (
    RestorePlan,
    WalIndex,
    choose_timeline,
    clear_recovery_settings,
    plan_point_in_time,
    prefetch_wal,
    recovery_settings,
    restore_command,
    stage_physical,
    wait_promoted,
)
from llmobs.backup.records import record_backups
from llmobs.backup.redis_backup import RDB_FILE, install_rdb
from llmobs.backup.repository import BackupEntry, Repository
from llmobs.backup.sites import Site
from llmobs.backup.verify import check_checksums
from llmobs.backup.wal import switch_and_wait
from llmobs.errors import LlmobsError, UsageError
from llmobs.stack.restore_journal import RestoreJournal, finish_interrupted, roll_back
from llmobs.store import audit

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    backup_id: str
    backup_type: str
    target_time: datetime | None = None
    timeline: int | None = None
    kept_aside: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup": self.backup_id,
            "type": self.backup_type,
            "target_time": self.target_time.isoformat() if self.target_time else None,
            "timeline": self.timeline,
            "kept_aside": self.kept_aside,
            **self.details,
        }


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def plan_restore(
    settings: Settings,
    repo: Repository,
    site: Site,
    *,
    backup_id: str | None,
    target: datetime | None,
    progress: Progress,
) -> tuple[RestorePlan, WalIndex | None]:
    """Choose what to restore; refuses (UsageError) before anything is touched."""
    entries = repo.backups()
    if backup_id is not None:
        entry = next((e for e in entries if e.id == backup_id), None)
        if entry is None:
            raise UsageError(f"no backup with id {backup_id!r}", hint="`llmobs backup list` shows the backups")
        if target is None or entry.type != "physical":
            if target is not None:
                raise UsageError(f"--to needs a physical backup; {backup_id} is {entry.type}")
            return RestorePlan(entry, None, None), None
        entries = [entry]
    if target is None:
        raise UsageError("give a backup id or --to TIME")
    physical = [e for e in entries if e.type == "physical"]
    if not physical:
        raise UsageError(
            "there is no physical backup to restore a point in time from",
            hint="take one with `llmobs backup --type physical`",
        )
    binaries = binaries_for(settings, physical[-1].manifest.pg_major)
    if site.db_running():
        progress.step("Closing the current WAL segment so the archive holds everything up to now")
        with admin_connection(settings) as conn:
            if not switch_and_wait(conn, commit_first=True, timeout=60):
                progress.warn("the newest WAL did not reach the archive; the restorable window ends earlier")
    index = WalIndex(repo, binaries)
    timeline = choose_timeline(
        index, repo.timeline_births(), target, site.live_timeline(), failovers=site.timelines_from_failovers
    )
    plan = plan_point_in_time(index, entries, target, timeline)
    return plan, index


def fetch_checked(repo: Repository, entry: BackupEntry, progress: Progress) -> Path:
    """The backup's files (downloaded from S3 if need be), refused when a checksum differs."""
    progress.step(f"Checking backup {entry.id}")
    source = repo.fetch(entry)
    checked = check_checksums(source, entry.manifest)
    if not checked.ok:
        raise LlmobsError(
            f"backup {entry.id} is damaged: {checked.detail}",
            hint="nothing was changed; choose another backup (`llmobs backup list`)",
        )
    return source


def restore_physical(
    settings: Settings, repo: Repository, site: Site, plan: RestorePlan, index: WalIndex | None, progress: Progress
) -> RestoreResult:
    entry = plan.base
    binaries = binaries_for(settings, entry.manifest.pg_major)
    source = fetch_checked(repo, entry, progress)
    if index is not None:
        fetched = prefetch_wal(index, plan)
        if fetched:
            progress.done(f"fetched {fetched} WAL file(s) from S3")
    stamp = _stamp()
    pgdata = site.pgdata
    journal = RestoreJournal(
        str(pgdata),
        "staging",
        str(pgdata.with_name(f"{pgdata.name}.restoring-{stamp}")),
        str(pgdata.with_name(f"{pgdata.name}{ASIDE_MARK}{stamp}")),
        entry.id,
        plan.target_time.isoformat() if plan.target_time else None,
    )
    recovery = recovery_settings(plan, restore_command(repo.paths.wal_archive, repo.wal_cache))
    journal.write("staging")

    def stop_now() -> None:
        site.stop_db(progress, immediate=True)

    try:
        progress.step(f"Unpacking {entry.id} and checking it with pg_verifybackup")
        stage_physical(source, entry.manifest, Path(journal.staging), binaries, recovery, site.owner())
    except BaseException:
        roll_back(journal, stop_now)
        raise
    was_running = site.db_running()
    writers = site.running_writers()
    site.stop_services(writers, progress)
    log_mark: int | None = None
    try:
        site.stop_db(progress)
        journal.write("swapped")
        if pgdata.exists():
            os.rename(pgdata, journal.aside)
        site.install_restored(Path(journal.staging))
        log_mark = site.log_mark()
        site.start_db(progress, timeout=settings.get_int("BACKUP_RESTORE_TIMEOUT_SECONDS"))
        progress.step("Replaying WAL" + (f" up to {plan.target_time.isoformat()}" if plan.target_time else ""))
        timeline = wait_promoted(
            lambda: admin_connection(settings, dbname="postgres"),
            site.db_running,
            timeout=settings.get_int("BACKUP_RESTORE_TIMEOUT_SECONDS"),
            log_hint=site.log_hint,
        )
        with admin_connection(settings, dbname="postgres") as conn:
            clear_recovery_settings(conn)
        check_database(settings)
        journal.write("verified")
    except BaseException as exc:
        # PostgreSQL's own reason (e.g. "recovery ended before the configured recovery target was
        # reached") says more than how we noticed (the server stopped, pg_ctl failed)
        cause = (site.server_error_since(log_mark) if log_mark is not None else None) or _describe(exc)
        progress.warn(f"restore failed ({cause}); putting the previous data directory back")
        _put_back(journal, stop_now, cause)
        if was_running:
            site.start_db(progress, timeout=120)
        site.start_services(writers, progress)
        if not isinstance(exc, Exception):
            raise
        raise LlmobsError(
            f"restore failed: {cause}; the data from before the restore is back in place",
            hint=f"nothing was lost; {site.log_hint}",
        ) from exc
    try:
        repo.record_timeline(
            timeline,
            {
                "born_at": datetime.now(UTC).isoformat(),
                "parent": plan.timeline,
                "backup": entry.id,
                "target": journal.target,
            },
        )
    except LlmobsError as exc:
        progress.warn(f"could not record timeline {timeline} in the repository: {exc.message}")
    kept = journal.aside if Path(journal.aside).exists() else None
    result = RestoreResult(entry.id, "physical", plan.target_time, timeline, kept)
    audit_restore(settings, result, repo)
    journal.remove()
    site.after_restore(progress)
    if not was_running:
        site.stop_db(progress)
    site.start_services(writers, progress)
    return result


def _put_back(journal: RestoreJournal, stop_server: Callable[[], None], cause: str) -> None:
    """``roll_back``; when that fails too, an error that gives the restore's cause first."""
    try:
        roll_back(journal, stop_server)
    except Exception as undo:
        raise LlmobsError(
            f"restore failed: {cause}; putting the previous data directory back failed too: {_describe(undo)}",
            hint=f"the previous data directory is kept at {journal.aside}, never deleted; `llmobs up` "
            "finishes putting it back",
        ) from undo


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, LlmobsError) else type(exc).__name__


def check_database(settings: Settings) -> None:
    """The restored cluster answers, writes, and holds the stack's database and schema."""
    with admin_connection(settings) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), to_regclass('llmobs_schema_migrations') IS NOT NULL").fetchone()
        if not row or row[0]:
            raise LlmobsError("the restored cluster is still in recovery")
        if not row[1]:
            raise LlmobsError(f"the restored cluster has no llmobs schema in database {settings.get_str('DB_NAME')}")


def audit_restore(settings: Settings, result: RestoreResult, repo: Repository | None = None) -> None:
    """The restore's audit record; and the backup rows, which a restore of the database rewinds."""

    if repo is not None:
        record_backups(settings, repo.backups(remote=False))
    try:
        with admin_connection(settings) as conn:
            audit.record(
                conn,
                "restore",
                actor=audit.cli_actor(),
                target=result.backup_id,
                source=audit.cli_source(),
                details=result.to_dict(),
            )
    except LlmobsError as exc:  # the restore stands; say so in the log
        log.warning("could not write the audit record of the restore: %s", exc.message)


# ---------------------------------------------------------------------------------------------
# logical


def restore_logical(
    settings: Settings, repo: Repository, site: Site, entry: BackupEntry, progress: Progress
) -> RestoreResult:
    """Load the dump into a new database, then swap names with the current one in a single
    transaction; the current database stays as ``<name>_before_restore_<time>``."""
    from psycopg import sql

    binaries = binaries_for(settings, entry.manifest.pg_major)
    source = fetch_checked(repo, entry, progress)
    check_dump(source / DUMP_FILE, binaries)
    database = settings.get_str("DB_NAME")
    stamp = _stamp().lower()
    staging = f"{database}_restoring_{stamp}"
    aside = f"{database}{DB_MARK}{stamp}"
    progress.step(f"Loading the dump into a new database {staging}")
    try:
        restore_dump(settings, source / DUMP_FILE, staging, binaries)
    except BaseException:
        _drop_database(settings, staging)
        raise
    writers = site.running_writers()
    site.stop_services(writers, progress)
    try:
        progress.step(f"Swapping {staging} in for {database}")
        with admin_connection(settings, dbname="postgres") as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            with conn.transaction():
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(database), sql.Identifier(aside)
                        )
                    )
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(database))
                )
        check_database(settings)
    except BaseException:
        _drop_database(settings, staging)
        site.start_services(writers, progress)
        raise
    result = RestoreResult(entry.id, "logical", kept_aside=aside)
    audit_restore(settings, result, repo)
    site.start_services(writers, progress)
    return result


def _drop_database(settings: Settings, name: str) -> None:
    from psycopg import sql

    try:
        with admin_connection(settings, dbname="postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except LlmobsError as exc:
        log.warning("could not drop %s: %s", name, exc.message)


# ---------------------------------------------------------------------------------------------
# redis, grafana


@dataclass(frozen=True)
class ServiceData:
    """A service whose data directory a restore replaces with a backup's file."""

    service: str
    title: str
    #: the backup's file that ``install`` puts in place
    backup_file: str
    #: (backup file, data directory, kept-aside directory); moves the current data aside
    install: Callable[[Path, Path, Path], None]
    #: the site's data directory of the service, None where a restore cannot replace it
    data_dir: Callable[[Site], Path | None]
    #: what to do where the restore is not available
    manual_hint: str


SERVICE_DATA = {
    "redis": ServiceData(
        "redis",
        "Redis",
        RDB_FILE,
        install_rdb,
        attrgetter("redis_data"),
        "restore the snapshot's dump.rdb into Redis's data by hand (docs/backup.md)",
    ),
    "grafana": ServiceData(
        "grafana",
        "Grafana",
        GRAFANA_ARCHIVE,
        install_grafana,
        attrgetter("grafana_data"),
        "Grafana runs in the compose runtime only; restore it there (docs/backup.md)",
    ),
}


def restore_service_data(repo: Repository, site: Site, entry: BackupEntry, progress: Progress) -> RestoreResult:
    """Replace a service's data (Redis, Grafana) with the backup's: the service stops if it runs,
    its data moves to ``BACKUP_DIR/kept-aside/<service>-<time>`` (and back if the install fails),
    and it starts again if it ran."""
    kind = SERVICE_DATA[entry.type]
    data_dir = kind.data_dir(site)
    if data_dir is None:
        raise UsageError(f"{kind.title} restores are not available in this runtime", hint=kind.manual_hint)
    source = fetch_checked(repo, entry, progress)
    _check_data_owner(data_dir)
    kept = repo.paths.kept_aside_dir / f"{kind.service}-{_stamp()}"
    running = [kind.service] if site.service_running(kind.service) else []
    site.stop_services(running, progress)
    try:
        progress.step(f"Installing {entry.id} into {data_dir}")
        kind.install(source / kind.backup_file, data_dir, kept)
        if in_job():
            share_with_group(kept)  # the other jobs' users list and remove it
    finally:
        site.start_services(running, progress)
    return RestoreResult(entry.id, entry.type, kept_aside=str(kept))


def _check_data_owner(data_dir: Path) -> None:
    """A compose job runs as the owner of the data it replaces (the host reads it from the volume);
    one that does not could neither move the data nor give the server files it can write."""
    if not in_job() or not data_dir.is_dir():
        return
    owner, me = data_dir.stat().st_uid, os.geteuid()
    if owner != me:
        raise LlmobsError(
            f"this restore job runs as uid {me}, but {data_dir} belongs to uid {owner}",
            hint="run `llmobs restore` on the host: it starts the job as the data's owner",
        )


def run_restore(
    settings: Settings,
    site: Site,
    *,
    backup_id: str | None,
    target: datetime | None,
    progress: Progress,
    repo: Repository | None = None,
) -> RestoreResult:
    """Restore a backup (``backup_id``), or the stack's data as it was at ``target``; under the
    backup lock, so no backup runs meanwhile."""

    repo = repo or Repository.from_settings(settings)
    repo.paths.ensure()
    if site.server_wal_cache is not None:
        repo.wal_cache = site.server_wal_cache
    with backup_lock(repo.paths.lock_file, "restore"):
        plan, index = plan_restore(settings, repo, site, backup_id=backup_id, target=target, progress=progress)
        kind = plan.base.type
        if kind == "physical":
            return restore_physical(settings, repo, site, plan, index, progress)
        if kind == "logical":
            return restore_logical(settings, repo, site, plan.base, progress)
        if kind in SERVICE_DATA:
            result = restore_service_data(repo, site, plan.base, progress)
            audit_restore(settings, result)
            return result
        raise UsageError(f"{plan.base.id} is a {kind} backup, which `llmobs restore` does not restore")


def finish_interrupted_job(settings: Settings, site: Site, progress: Progress) -> str | None:
    """Undo (or complete) a restore that was interrupted, under the backup lock so that a
    restore still running is left alone; what the compose runtime's `up` asks of a job before
    the database starts. Returns what was done, if anything."""

    paths = BackupPaths.from_settings(settings)
    paths.ensure()
    with backup_lock(paths.lock_file, "finish an interrupted restore"):
        return finish_interrupted(site.pgdata, lambda: site.stop_db(progress, immediate=True))
