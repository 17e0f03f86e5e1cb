"""WAL segments and timelines: names, continuity from a base backup, the newest commit in the
archive, shipping to S3, and which segments retention may remove.

A segment name is TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then the segment number split in two.
After a point-in-time restore the server continues on a new timeline and archives
``0000000N.history``, listing each ancestor timeline and the LSN where it was left. Recovery
reads the segment that contains a switch point from the new timeline, so a chain from a base
backup runs on each timeline up to the segment before its switch point.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.proc import run
from llmobs.stack.postgres import PgBinaries

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
BACKUP_LABEL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$")
#: failed archive_command runs (PostgreSQL tries 3 times a second apart, then pauses) after which
#: waiting for a segment stops: archiving is broken, not slow
ARCHIVER_GIVES_UP = 3
_COMMIT_RE = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def parse_segment(name: str, segment_size: int) -> tuple[int, int] | None:
    """(timeline, segment number) of a segment, a .partial segment, or a .backup history file."""
    match = SEGMENT_RE.match(name) or PARTIAL_RE.match(name) or BACKUP_LABEL_RE.match(name)
    if not match:
        return None
    per_id = 0x100000000 // segment_size
    return int(match[1], 16), int(match[2], 16) * per_id + int(match[3], 16)


def is_wal_file(name: str) -> bool:
    return bool(
        SEGMENT_RE.match(name) or PARTIAL_RE.match(name) or HISTORY_RE.match(name) or BACKUP_LABEL_RE.match(name)
    )


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def parse_history(text: str) -> list[tuple[int, int]]:
    """(ancestor timeline, LSN where it was left), oldest first."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        entries.append((int(parts[0]), parse_lsn(parts[1])))
    return entries


@dataclass(frozen=True)
class ChainStep:
    timeline: int
    first_segno: int
    #: last segment number read on this timeline; None: open-ended (the target timeline)
    last_segno: int | None


def chain_steps(
    timeline: int, start_lsn: int, target_timeline: int, history: list[tuple[int, int]], segment_size: int
) -> list[ChainStep] | None:
    """The segments recovery reads from a base backup on ``timeline`` at ``start_lsn`` to the end
    of ``target_timeline``; None when the base is not in the target timeline's history (it was
    taken on a branch that was abandoned, or after the branch point)."""
    start = start_lsn // segment_size
    if timeline == target_timeline:
        return [ChainStep(timeline, start, None)]
    tlis = [t for t, _ in history]
    if timeline not in tlis:
        return None
    steps = []
    first = start
    index = tlis.index(timeline)
    for i in range(index, len(history)):
        tli, switch = history[i]
        if i == index and start_lsn >= switch:
            return None
        last = switch // segment_size - 1
        if last >= first:
            steps.append(ChainStep(tli, first, last))
        first = switch // segment_size
    steps.append(ChainStep(target_timeline, first, None))
    return steps


@dataclass
class WalChain:
    """How far the archive carries a base backup without a gap."""

    #: last segment of the unbroken chain (None: not even the first one)
    last_segment: str | None
    #: first missing segment when later segments exist: recovery cannot pass it
    gap: str | None
    segments: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.gap is None and self.last_segment is not None


def follow_chain(
    steps: list[ChainStep], available: set[str], segment_size: int, provided: Iterable[str] = ()
) -> WalChain:
    """Walk ``steps`` through the available segments. ``provided``: segments that come with the
    base backup itself (its pg_wal)."""
    have = available | set(provided)
    target = steps[-1].timeline
    newest_on_target = max(
        (
            parsed[1]
            for name in have
            if SEGMENT_RE.match(name) and (parsed := parse_segment(name, segment_size)) and parsed[0] == target
        ),
        default=-1,
    )
    chain = WalChain(None, None)
    for step in steps:
        segno = step.first_segno
        last = step.last_segno if step.last_segno is not None else newest_on_target
        while segno <= last:
            name = segment_name(step.timeline, segno, segment_size)
            if name not in have:
                chain.gap = name
                return chain
            chain.segments.append(name)
            chain.last_segment = name
            segno += 1
    return chain


def last_commit_time(segment: Path, binaries: PgBinaries) -> datetime | None:
    """Time of the newest commit (or abort) record in one segment file, read with pg_waldump."""
    proc = run(
        [binaries("pg_waldump"), "--rmgr=Transaction", "--path", segment.parent, segment.name, segment.name],
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    newest = None
    for match in _COMMIT_RE.finditer(proc.stdout.decode(errors="replace")):
        when = datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
        if newest is None or when > newest:
            newest = when
    return newest


def removable_wal(names: Iterable[str], keep_from_segno: int, segment_size: int) -> list[str]:
    """WAL files older than the oldest segment a kept base backup needs (any timeline: a segment
    number before that point is never read again). History files are always kept: they are tiny
    and recovery needs them to follow timelines."""
    removable = []
    for name in names:
        parsed = parse_segment(name, segment_size)
        if parsed is not None and parsed[1] < keep_from_segno:
            removable.append(name)
    return sorted(removable)


def switch_and_wait(conn: psycopg.Connection, *, timeout: float = 120, commit_first: bool = False) -> bool:
    """Close the current WAL segment and wait until the archiver has copied it, so that the
    archive holds everything written so far. ``commit_first`` writes a tiny transaction first:
    a time-targeted recovery stops only at a commit record later than its target, so a restore
    to "just now" needs one. False when archiving is off, fails (ARCHIVER_GIVES_UP failed attempts
    while we wait: seconds, not the whole timeout) or does not catch up in time."""
    if commit_first:
        conn.execute("SELECT txid_current()")
    row = conn.execute("SELECT pg_walfile_name(pg_switch_wal()), current_setting('archive_mode')").fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    wanted, mode = row
    if mode == "off":
        return False
    deadline = time.monotonic() + timeout
    failures_before = None
    while True:
        row = conn.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver").fetchone()
        last, failures = row if row else (None, 0)
        # the last archived file may be a segment or a .backup history file named after one
        if last and re.match(r"^[0-9A-F]{24}", last) and last[8:24] >= wanted[8:]:
            return True
        failures_before = failures if failures_before is None else failures_before
        if failures - failures_before >= ARCHIVER_GIVES_UP:
            # The archiver works in order: while it fails, the segment we wait for cannot come.
            log.warning("WAL archiving fails (%d failures while waiting for %s)", failures - failures_before, wanted)
            return False
        if time.monotonic() > deadline:
            log.warning("WAL segment %s not archived after %.0f s (last archived: %s)", wanted, timeout, last)
            return False
        time.sleep(0.2)
