"""Point-in-time recovery the way backup tools test it: rows written, times recorded, rows
changed; each restore gives exactly the rows committed before its target (full dump compared),
including after earlier restores created new timelines."""

from __future__ import annotations

import pytest

from llmobs.backup.jobs import create_backup
from llmobs.backup.restore import run_restore
from llmobs.errors import UsageError
from llmobs.progress import SilentProgress

from helpers.backup import ArchivedCluster


def _restore_to(a: ArchivedCluster, when):  # type: ignore[no-untyped-def]
    return run_restore(a.settings, a.site, backup_id=None, target=when, progress=SilentProgress())


def test_pitr_to_each_moment_then_again_after_restores(archived: ArchivedCluster) -> None:
    a = archived
    a.sql("CREATE TABLE pitr_rows (id int PRIMARY KEY, note text)")
    create_backup(a.settings, "physical", SilentProgress())
    a.sql("INSERT INTO pitr_rows SELECT g, 'first ' || g FROM generate_series(1, 50) g")
    t1 = a.now()
    dump1 = a.dump()
    a.sql("INSERT INTO pitr_rows SELECT g, 'second ' || g FROM generate_series(51, 100) g")
    t2 = a.now()
    dump2 = a.dump()
    a.sql("DELETE FROM pitr_rows WHERE id % 3 = 0")
    t3 = a.now()
    dump3 = a.dump()
    assert len({dump1, dump2, dump3}) == 3

    timelines = []
    for when, expected in ((t1, dump1), (t2, dump2), (t3, dump3)):
        result = _restore_to(a, when)
        assert a.dump() == expected
        assert result.kept_aside and result.timeline
        timelines.append(result.timeline)
    assert timelines == sorted(timelines) and len(set(timelines)) == 3

    # Life goes on on the newest timeline; a later PITR reaches it, and an earlier time still
    # gives the data as it was then.
    a.sql("INSERT INTO pitr_rows VALUES (1000, 'after the restores')")
    t4 = a.now()
    dump4 = a.dump()
    a.sql("TRUNCATE pitr_rows")
    _restore_to(a, t4)
    assert a.dump() == dump4
    _restore_to(a, t2)
    assert a.dump() == dump2
    audit = a.sql("SELECT count(*) FROM audit_log WHERE action = 'restore'")[0][0]
    assert audit >= 1
    kept = sorted(p.name for p in (a.root / "data").iterdir() if ".before-restore-" in p.name)
    assert len(kept) == 5


def test_target_outside_the_window_is_refused_and_nothing_changes(archived: ArchivedCluster) -> None:
    a = archived
    before_backup = a.now()
    create_backup(a.settings, "physical", SilentProgress())
    a.sql("CREATE TABLE kept (id int)")
    dump = a.dump()
    with pytest.raises(UsageError, match="before the earliest restorable point: the oldest physical backup kept"):
        _restore_to(a, before_backup)
    from datetime import timedelta

    with pytest.raises(UsageError, match="after the latest restorable point"):
        _restore_to(a, a.now() + timedelta(hours=1))
    assert a.dump() == dump
    assert not [p for p in (a.root / "data").iterdir() if "restor" in p.name]
