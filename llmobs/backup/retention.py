"""Retention: which backups a policy keeps, and pruning the rest (locally and in S3) together
with the WAL that no kept base backup needs any more.

The policy works like restic's ``--keep-*``: for each of the last N days (weeks, months) that
have a backup, keep the newest backup of that day (week, month); also keep every backup younger
than BACKUP_RETENTION_DAYS, and always the newest one. Each backup type is its own series.
Days, weeks (ISO) and months are counted in UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from llmobs.backup.manifest import Manifest
from llmobs.backup.repository import Repository
from llmobs.backup.wal import DEFAULT_SEGMENT_SIZE, parse_lsn, removable_wal, segment_name

if TYPE_CHECKING:
    from llmobs.config import Settings


@dataclass(frozen=True)
class RetentionPolicy:
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 3
    retention_days: int = 0
    #: Upper bound: no backup older than this many days is kept, whatever the rules above say
    #: (0: none). Erased data leaves the backups within this bound.
    max_age_days: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, *, max_age_days: int | None = None) -> RetentionPolicy:
        """The policy of the settings; ``max_age_days`` overrides BACKUP_PRUNE_MAX_AGE_DAYS."""
        return cls(
            settings.get_int("BACKUP_KEEP_DAILY"),
            settings.get_int("BACKUP_KEEP_WEEKLY"),
            settings.get_int("BACKUP_KEEP_MONTHLY"),
            settings.get_int("BACKUP_RETENTION_DAYS"),
            settings.get_int("BACKUP_PRUNE_MAX_AGE_DAYS") if max_age_days is None else max_age_days,
        )

    def describe(self) -> str:
        parts = [f"daily {self.keep_daily}", f"weekly {self.keep_weekly}", f"monthly {self.keep_monthly}"]
        if self.retention_days:
            parts.append(f"everything from the last {self.retention_days} day(s)")
        if self.max_age_days:
            parts.append(f"nothing older than {self.max_age_days} day(s)")
        return ", ".join(parts)


def _newest_per_bucket(series: list[Manifest], count: int, bucket: Callable[[datetime], Hashable]) -> list[str]:
    kept: list[str] = []
    seen: set[Hashable] = set()
    for m in series:  # newest first
        if len(seen) >= count:
            break
        key = bucket(m.finished_at)
        if key not in seen:
            seen.add(key)
            kept.append(m.id)
    return kept


def kept_backups(manifests: list[Manifest], policy: RetentionPolicy, now: datetime) -> dict[str, list[str]]:
    """Backup id -> why it is kept. Backups not in the result are to be deleted."""
    reasons: dict[str, list[str]] = {}
    for backup_type in sorted({m.type for m in manifests}):
        series = sorted((m for m in manifests if m.type == backup_type), key=lambda m: m.finished_at, reverse=True)
        reasons.setdefault(series[0].id, []).append("newest")
        rules: list[tuple[str, int, Callable[[datetime], Hashable]]] = [
            ("daily", policy.keep_daily, lambda t: t.date()),
            ("weekly", policy.keep_weekly, lambda t: tuple(t.isocalendar())[:2]),
            ("monthly", policy.keep_monthly, lambda t: (t.year, t.month)),
        ]
        for name, count, bucket in rules:
            for backup_id in _newest_per_bucket(series, count, bucket):
                reasons.setdefault(backup_id, []).append(name)
        if policy.retention_days:
            cutoff = now - timedelta(days=policy.retention_days)
            for m in series:
                if m.finished_at >= cutoff:
                    reasons.setdefault(m.id, []).append(f"younger than {policy.retention_days} d")
    if policy.max_age_days:
        too_old = now - timedelta(days=policy.max_age_days)
        for m in manifests:
            if m.finished_at < too_old:
                reasons.pop(m.id, None)
    return reasons


@dataclass
class PruneResult:
    dry_run: bool
    kept: dict[str, list[str]] = field(default_factory=dict)
    #: (backup id, location)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    #: location -> WAL files
    wal_deleted: dict[str, list[str]] = field(default_factory=dict)
    #: the oldest WAL segment that kept backups need (None: no physical backup, no WAL removed)
    wal_kept_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "kept": self.kept,
            "deleted": [{"id": i, "location": loc} for i, loc in self.deleted],
            "wal_deleted": {loc: len(names) for loc, names in self.wal_deleted.items()},
            "wal_kept_from": self.wal_kept_from,
        }


def prune(repo: Repository, policy: RetentionPolicy, now: datetime, *, dry_run: bool = False) -> PruneResult:
    entries = repo.backups()
    result = PruneResult(dry_run, kept_backups([e.manifest for e in entries], policy, now) if entries else {})
    doomed = [e for e in entries if e.id not in result.kept]
    for entry in doomed:
        for location in list(entry.locations):
            result.deleted.append((entry.id, location))
            if not dry_run:
                repo.delete(entry, location)
    physical = [e.manifest for e in entries if e.id in result.kept and e.type == "physical" and e.manifest.start_lsn]
    if not physical and policy.max_age_days:
        # No base backup is left to replay WAL onto: all archived WAL goes (it holds the data
        # too); timeline history files hold none and stay.
        for name, where in repo.wal_files().items():
            if name.endswith(".history"):
                continue
            for location in where:
                result.wal_deleted.setdefault(location, []).append(name)
        for location, names in result.wal_deleted.items():
            if not dry_run:
                repo.delete_wal(names, location)
    if physical:
        oldest = min(physical, key=lambda m: parse_lsn(m.start_lsn or "0/0"))
        size = oldest.wal_segment_size or DEFAULT_SEGMENT_SIZE
        keep_from = parse_lsn(oldest.start_lsn or "0/0") // size
        result.wal_kept_from = segment_name(oldest.timeline or 1, keep_from, size)
        by_location: dict[str, list[str]] = {}
        for name, where in repo.wal_files().items():
            for location in where:
                by_location.setdefault(location, []).append(name)
        for location, names in by_location.items():
            removable = removable_wal(names, keep_from, size)
            if removable:
                result.wal_deleted[location] = removable
                if not dry_run:
                    repo.delete_wal(removable, location)
    return result
