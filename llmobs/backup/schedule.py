"""`llmobs backup schedule`: the long-running scheduler of the compose stack's ``backup``
service. Each job has a cron expression in settings (empty: off); a job that finds another
backup operation running is skipped (logged), never queued behind it."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmobs.backup.jobs import create_backup, prune_backups, ship_wal, verify_backups
from llmobs.errors import AlreadyRunning, ConfigError, LlmobsError

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    name: str
    setting: str
    run: Callable[[Settings, Progress], Any]


def _create(kind: str) -> Callable[[Settings, Progress], Any]:
    def run(settings: Settings, progress: Progress) -> Any:
        return create_backup(settings, kind, progress).id

    return run


def _ship(settings: Settings, progress: Progress) -> Any:
    return len(ship_wal(settings))


def _verify(settings: Settings, progress: Progress) -> Any:
    results = verify_backups(settings, None, progress, newest_only=True)
    failed = [r.backup_id for r in results if not r.ok]
    if failed:
        raise LlmobsError(f"verification failed: {', '.join(failed)}")
    return len(results)


def _prune(settings: Settings, progress: Progress) -> Any:
    return len(prune_backups(settings, dry_run=False).deleted)


JOBS: tuple[Job, ...] = (
    Job("physical", "BACKUP_SCHEDULE_PHYSICAL", _create("physical")),
    Job("logical", "BACKUP_SCHEDULE_LOGICAL", _create("logical")),
    Job("redis", "BACKUP_SCHEDULE_REDIS", _create("redis")),
    Job("grafana", "BACKUP_SCHEDULE_GRAFANA", _create("grafana")),
    Job("wal-ship", "BACKUP_SCHEDULE_WAL_SHIP", _ship),
    Job("verify", "BACKUP_SCHEDULE_VERIFY", _verify),
    Job("prune", "BACKUP_SCHEDULE_PRUNE", _prune),
)


def cron_trigger(name: str, expression: str) -> Any:
    """A trigger from five cron fields (minute hour day month weekday), or six with seconds
    first; a ConfigError naming the setting when it does not parse."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(expression, timezone="UTC")
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone="UTC"
            )
    except ValueError as exc:
        raise ConfigError(name, f"{expression!r} is not a valid cron expression: {exc}") from None
    raise ConfigError(name, f"{expression!r} is not a cron expression (five fields, or six with seconds first)")


def enabled_jobs(settings: Settings) -> list[tuple[Job, Any]]:
    jobs = []
    for job in JOBS:
        expression = settings.get_str(job.setting)
        if not expression:
            continue
        if job.name == "wal-ship" and not settings.get_str("BACKUP_S3_BUCKET"):
            continue
        if job.name == "grafana" and not settings.get_str("BACKUP_GRAFANA_DATA_DIR"):
            continue
        jobs.append((job, cron_trigger(job.setting, expression)))
    return jobs


def run_job(job: Job, settings: Settings, progress: Progress, emit: Callable[[dict[str, Any]], None]) -> None:
    emit({"event": "job.start", "job": job.name})
    try:
        outcome = job.run(settings, progress)
    except AlreadyRunning as exc:
        emit({"event": "job.skipped", "job": job.name, "reason": exc.message})
    except LlmobsError as exc:
        emit({"event": "job.failed", "job": job.name, "error": exc.message})
    except Exception as exc:  # a failing job must not end the scheduler
        log.exception("job %s crashed", job.name)
        emit({"event": "job.failed", "job": job.name, "error": f"{type(exc).__name__}: {exc}"})
    else:
        emit({"event": "job.done", "job": job.name, "result": outcome})


def run_schedule(settings: Settings, progress: Progress, emit: Callable[[dict[str, Any]], None]) -> None:
    """Run until SIGTERM or SIGINT."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    jobs = enabled_jobs(settings)
    if not jobs:
        raise LlmobsError("no backup job is scheduled", hint="set the BACKUP_SCHEDULE_* cron expressions")
    scheduler = BlockingScheduler(timezone="UTC")
    for job, trigger in jobs:
        scheduler.add_job(
            run_job,
            trigger,
            args=(job, settings, progress, emit),
            id=job.name,
            name=job.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=300,
        )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: scheduler.shutdown(wait=False))
    now = datetime.now(UTC)
    emit(
        {
            "event": "schedule.start",
            "jobs": {job.name: str(trigger.get_next_fire_time(None, now)) for job, trigger in jobs},
        }
    )
    scheduler.start()  # blocks until a signal shuts it down
    emit({"event": "schedule.stop"})
