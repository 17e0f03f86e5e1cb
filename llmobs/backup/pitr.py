"""Point-in-time recovery at the level of a data directory: which base backup and timeline a
target needs, the window the archive can restore, staging a data directory from a base
backup with recovery settings, and waiting for the recovered server to promote.

Recovery settings go into ``postgresql.auto.conf`` (read last, whatever started the server),
beside ``recovery.signal``; after promotion they are reset with ALTER SYSTEM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.extract import chown_tree, extract_physical, verify_extracted
from llmobs.backup.manifest import Manifest
from llmobs.backup.pgclient import scalar
from llmobs.backup.repository import BackupEntry, Repository
from llmobs.backup.verify import backup_own_segments
from llmobs.backup.wal import (
    HISTORY_RE,
    SEGMENT_RE,
    chain_steps,
    follow_chain,
    history_name,
    last_commit_time,
    parse_lsn,
    parse_segment,
)
from llmobs.errors import LlmobsError, UsageError
from llmobs.stack.postgres import PgBinaries

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

RECOVERY_KEYS = (
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_action",
    "recovery_target_inclusive",
)
_MARK = "# llmobs restore: removed after promotion"
#: how many segments back from the end of a chain to look for the newest commit
_COMMIT_LOOKBACK = 16


def parse_target_time(text: str) -> datetime:
    """An ISO 8601 time *with* a time zone (a time without one is ambiguous: refused)."""
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 time", hint="e.g. 2025-03-01T14:30:00Z") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError(f"{text!r} has no time zone", hint="add one, e.g. 2025-03-01T14:30:00Z or +02:00")
    return when


@dataclass
class Window:
    """The times a base backup and the archive after it can restore to: from ``earliest``
    (the backup's end) up to, not including, ``latest`` (the newest commit the unbroken WAL
    chain holds)."""

    backup_id: str
    earliest: datetime
    latest: datetime
    last_segment: str | None
    gap: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "backup": self.backup_id,
            "earliest": self.earliest.isoformat(),
            "latest": self.latest.isoformat(),
            "last_segment": self.last_segment,
            "gap": self.gap,
        }


@dataclass
class RestorePlan:
    base: BackupEntry
    #: None: restore the backup as it was taken (recovery_target = 'immediate')
    target_time: datetime | None
    timeline: int | None
    windows: list[Window] = field(default_factory=list)


class WalIndex:
    """The archive as one restore sees it: files and where, timeline histories, commit times."""

    def __init__(self, repo: Repository, binaries: PgBinaries, *, remote: bool = True) -> None:
        self.repo = repo
        self.binaries = binaries
        self.files = repo.wal_files(remote=remote)
        self.histories = repo.histories(self.files)
        self._commit_times: dict[str, datetime | None] = {}

    def newest_timeline(self) -> int:
        tlis = [int(m[1], 16) for n in self.files if (m := HISTORY_RE.match(n) or SEGMENT_RE.match(n))]
        return max(tlis, default=1)

    def history_time(self, timeline: int) -> datetime | None:
        """When the history file of ``timeline`` was archived (the local archive's mtime)."""

        path = self.repo.wal_archive.path(history_name(timeline))
        return datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.is_file() else None

    def commit_time(self, name: str) -> datetime | None:
        if name not in self._commit_times:
            where = self.files.get(name)
            self._commit_times[name] = (
                last_commit_time(self.repo.wal_path(name, where), self.binaries) if where else None
            )
        return self._commit_times[name]

    def window(self, entry: BackupEntry, timeline: int, *, pending_until: datetime | None = None) -> Window | None:
        """The window of ``entry`` on ``timeline``. ``pending_until``: the live server archives
        what it has written up to then (archiving works, and a restore switches WAL first), so
        a chain without a gap to the end of the archive reaches that time."""
        m = entry.manifest
        if m.type != "physical" or not (m.start_lsn and m.timeline and m.wal_segment_size):
            return None
        steps = chain_steps(
            m.timeline, parse_lsn(m.start_lsn), timeline, self.histories.get(timeline, []), m.wal_segment_size
        )
        if steps is None:
            return None
        chain = follow_chain(steps, set(self.files), m.wal_segment_size, provided=backup_own_segments(m))
        latest = m.finished_at
        for name in reversed(chain.segments[-_COMMIT_LOOKBACK:]):
            commit = self.commit_time(name)
            if commit is not None:
                latest = max(latest, commit)
                break
        if pending_until is not None and chain.gap is None:
            latest = max(latest, pending_until)
        if latest <= m.finished_at:  # nothing committed after the backup yet: no point to restore to
            return None
        return Window(m.id, m.finished_at, latest, chain.last_segment, chain.gap)


def describe_windows(windows: list[Window]) -> str:
    if not windows:
        return "no physical backup can be restored to a point in time"
    spans = "; ".join(
        f"{w.earliest.isoformat(timespec='seconds')} .. {w.latest.isoformat(timespec='seconds')}" for w in windows
    )
    return f"restorable window(s): {spans}"


def plan_point_in_time(index: WalIndex, entries: list[BackupEntry], target: datetime, timeline: int) -> RestorePlan:
    """The newest base backup that ends before ``target`` and whose WAL chain reaches past it;
    UsageError naming the restorable window otherwise."""
    bases = [e for e in entries if e.type == "physical"]
    oldest = min(bases, key=lambda e: e.manifest.finished_at, default=None)
    if oldest is not None and target <= oldest.manifest.finished_at:
        # say so first: the windows of other timelines or a missing WAL chain are beside the point
        raise UsageError(
            f"{target.isoformat()} is before the earliest restorable point: the oldest physical backup kept, "
            f"{oldest.id}, ended at {oldest.manifest.finished_at.isoformat()}",
            hint="older backups and the WAL they needed were pruned (BACKUP_KEEP_*, BACKUP_RETENTION_DAYS) "
            "or never taken; `llmobs backup list` shows what can be restored",
        )
    windows = [w for e in bases if (w := index.window(e, timeline)) is not None]
    if not windows:
        raise UsageError(
            "no physical backup has archived WAL after it: there is no point in time to restore to",
            hint="restore a backup as it was taken with `llmobs restore ID`",
        )
    merged = merge_windows(windows)
    candidates = [w for w in windows if w.earliest < target]
    if not candidates:
        raise UsageError(f"{target.isoformat()} is before the earliest restorable point", hint=describe_windows(merged))
    best = max(candidates, key=lambda w: w.earliest)
    if target >= best.latest:
        why = (
            f"the WAL archive has a gap at segment {best.gap}"
            if best.gap
            else "the archive holds no commit after it yet"
        )
        raise UsageError(
            f"{target.isoformat()} is after the latest restorable point {best.latest.isoformat()} ({why})",
            hint=describe_windows(merged),
        )
    base = next(e for e in bases if e.id == best.backup_id)
    return RestorePlan(base, target, timeline, merged)


def merge_windows(windows: list[Window]) -> list[Window]:
    """Overlapping windows as one span per stretch of unbroken WAL (for messages and listings)."""
    merged: list[Window] = []
    for w in sorted(windows, key=lambda w: w.earliest):
        if merged and w.earliest <= merged[-1].latest:
            last = merged[-1]
            if w.latest > last.latest:
                merged[-1] = Window(last.backup_id, last.earliest, w.latest, w.last_segment, w.gap)
        else:
            merged.append(w)
    return merged


def choose_timeline(
    index: WalIndex, births: dict[int, datetime], target: datetime, live: int | None, *, failovers: bool = False
) -> int:
    """The timeline that was live at ``target``: "restore to 14:30" means the data as the stack
    had it at 14:30, even if a restore since then went back to an earlier point and started a
    new timeline. Timelines that restores created are recorded with the time they went live;
    one without a record is a restore that was rolled back (left aside), except the live one.

    ``failovers`` (profile `ha`): a timeline no restore recorded was started by a failover or
    switchover (Patroni promoting a replica). It continues its parent without a fork: the parent's
    last segment is archived whole only on the child (the parent's copy is ``.partial``), so a
    target on the parent is reached through the child, and so on down such a chain."""
    epoch = datetime.min.replace(tzinfo=target.tzinfo)
    candidates = {1: epoch, **births}
    if live is not None and live not in candidates:
        candidates[live] = index.history_time(live) or epoch
    continued: dict[int, list[int]] = {}
    if failovers:
        for tli, history in index.histories.items():
            if tli in births or not history:
                continue
            candidates.setdefault(tli, index.history_time(tli) or epoch)
            continued.setdefault(history[-1][0], []).append(tli)
    eligible = [(born, tli) for tli, born in candidates.items() if born <= target]
    chosen = max(eligible)[1] if eligible else 1
    while continued.get(chosen):
        chosen = max(continued[chosen])
    return chosen


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def restore_command(*archive_dirs: Path) -> str:
    """Copy a WAL file from the first of ``archive_dirs`` that has it (paths as the server sees
    them); fail when none has it, which is how recovery learns where WAL ends."""
    return " || ".join(f'cp "{d}/%f" "%p" 2>/dev/null' for d in archive_dirs)


def recovery_settings(plan: RestorePlan, command: str) -> dict[str, str]:
    settings = {"restore_command": command, "recovery_target_action": "promote"}
    if plan.target_time is None:
        settings["recovery_target"] = "immediate"
        settings["recovery_target_timeline"] = "current"  # the backup's own: stop where it is consistent
    else:
        settings["recovery_target_time"] = plan.target_time.isoformat(sep=" ")
        settings["recovery_target_inclusive"] = "on"
        if plan.timeline is not None:
            settings["recovery_target_timeline"] = str(plan.timeline)
    return settings


def write_recovery(pgdata: Path, settings: dict[str, str]) -> None:
    auto = pgdata / "postgresql.auto.conf"
    lines = [_MARK, *(f"{k} = {_quote(v)}" for k, v in settings.items())]
    with auto.open("a") as fh:
        fh.write("\n" + "\n".join(lines) + "\n")
    (pgdata / "recovery.signal").write_text("")


def stage_physical(
    source: Path,
    manifest: Manifest,
    staging: Path,
    binaries: PgBinaries,
    recovery: dict[str, str],
    owner: tuple[int, int] | None,
) -> None:
    """Build a data directory at ``staging`` from a backup's (checked) files in ``source``,
    verified with pg_verifybackup, set to recover."""
    extract_physical(source, manifest, staging)
    verify_extracted(source, staging, binaries)
    for leftover in ("postmaster.pid", "postmaster.opts"):
        (staging / leftover).unlink(missing_ok=True)
    write_recovery(staging, recovery)
    if owner is not None:
        chown_tree(staging, *owner)
    staging.chmod(0o700)


def prefetch_wal(index: WalIndex, plan: RestorePlan) -> int:
    """Download from S3 the WAL files recovery may need that are not in the local archive (the
    restore_command looks in the WAL cache second). Returns how many were fetched."""
    m = plan.base.manifest
    size = m.wal_segment_size or 0
    start = parse_lsn(m.start_lsn or "0/0") // size if size else 0
    fetched = 0
    for name, where in sorted(index.files.items()):
        if "local" in where:
            continue
        parsed = parse_segment(name, size) if size else None
        if HISTORY_RE.match(name) or (parsed is not None and parsed[1] >= start and SEGMENT_RE.match(name)):
            index.repo.wal_path(name, where)
            fetched += 1
    return fetched


def wait_promoted(
    connect: Callable[[], psycopg.Connection], alive: Callable[[], bool], *, timeout: float, log_hint: str
) -> int:
    """Wait until the recovering server has promoted; returns its new timeline. Fails when the
    server exits (recovery errors are fatal) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise LlmobsError("PostgreSQL stopped during recovery", hint=log_hint)
        try:
            with connect() as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())"
                ).fetchone()
                if row and not row[0]:
                    conn.execute("CHECKPOINT")
                    return int(scalar(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))
        except LlmobsError:
            pass
        time.sleep(0.5)
    raise LlmobsError(f"recovery did not finish within {timeout:.0f} s", hint=log_hint)


def clear_recovery_settings(conn: psycopg.Connection) -> None:
    from psycopg import sql

    for key in RECOVERY_KEYS:
        conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(key)))
    conn.execute("SELECT pg_reload_conf()")
