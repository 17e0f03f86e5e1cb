"""Which timeline a point-in-time restore recovers along, from the archive's history files and
the timelines restores recorded. With the `ha` profile a timeline no restore recorded comes from
a failover (Patroni promoted a replica): it continues its parent, whose last segment is archived
whole only on the child, so a target on the parent is recovered through the child."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmobs.backup.paths import BackupPaths
from llmobs.backup.pitr import WalIndex, choose_timeline
from llmobs.backup.repository import Repository
from llmobs.stack.postgres import PgBinaries

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def archive(tmp_path: Path, histories: dict[int, tuple[str, datetime]]) -> WalIndex:
    """An archive holding ``0000000N.history`` files (content, archived at) and one segment."""
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / "000000010000000000000001").write_bytes(b"")
    for tli, (text, at) in histories.items():
        path = wal / f"{tli:08X}.history"
        path.write_text(text)
        os.utime(path, (at.timestamp(), at.timestamp()))
    repo = Repository(BackupPaths(tmp_path / "backups", wal))
    return WalIndex(repo, PgBinaries(tmp_path, 15), remote=False)


# timeline 2: a switchover at T0 + 10 min; timeline 3: a restore at T0 + 20 min to T0 + 5 min
# on timeline 2; timeline 4: a failover of the restored cluster at T0 + 30 min
HISTORIES = {
    2: ("1\t0/5000000\tno recovery target specified\n", T0 + timedelta(minutes=10)),
    3: ("1\t0/5000000\tno recovery target specified\n2\t0/6000000\tbefore 2026-12-05\n", T0 + timedelta(minutes=20)),
    4: (
        "1\t0/5000000\tno recovery target specified\n2\t0/6000000\tbefore 2026-12-05\n"
        "3\t0/8000000\tno recovery target specified\n",
        T0 + timedelta(minutes=30),
    ),
}
BIRTHS = {3: T0 + timedelta(minutes=20)}


@pytest.mark.parametrize(
    ("minutes", "failovers", "expected"),
    [
        # HA: before the switchover, through timeline 2 (it holds timeline 1's last segment whole)
        (5, True, 2),
        # HA: between the switchover and the restore: timeline 2 (the restore's 3 came later)
        (15, True, 2),
        # HA: after the restore, before its failover: timeline 3 continued by 4
        (25, True, 4),
        (35, True, 4),
        # one node: an unrecorded timeline is a restore rolled back, never followed
        (5, False, 1),
        (25, False, 3),
    ],
)
def test_failover_timelines_continue_their_parent(tmp_path: Path, minutes: int, failovers: bool, expected: int):
    index = archive(tmp_path, HISTORIES)
    target = T0 + timedelta(minutes=minutes)
    assert choose_timeline(index, BIRTHS, target, live=4, failovers=failovers) == expected
