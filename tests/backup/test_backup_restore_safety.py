"""Logical backups round-trip into a fresh cluster; a damaged backup is refused before any
data is touched; a restore that fails puts the previous data directory back."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from llmobs.backup.jobs import create_backup, verify_backups
from llmobs.backup.restore import run_restore
from llmobs.errors import LlmobsError
from llmobs.progress import SilentProgress

from helpers.backup import ArchivedCluster, destroy, make_archived_cluster


def _fill(a: ArchivedCluster) -> None:
    a.sql("INSERT INTO projects (name) VALUES ('second')")
    a.sql("CREATE TABLE notes (id serial PRIMARY KEY, body text, data jsonb)")
    a.sql(
        "INSERT INTO notes (body, data) SELECT 'note ' || g, jsonb_build_object('g', g) FROM generate_series(1, 500) g"
    )


def test_logical_backup_restores_into_a_fresh_cluster_identically(archived: ArchivedCluster) -> None:
    _fill(archived)
    expected = archived.dump()
    entry = create_backup(archived.settings, "logical", SilentProgress())
    fresh = make_archived_cluster()
    try:
        # the fresh stack shares the repository (a new machine with the same backup directory)
        shutil.copytree(archived.backup_dir / entry.id, fresh.backup_dir / entry.id)
        assert fresh.dump() != expected
        result = run_restore(fresh.settings, fresh.site, backup_id=entry.id, target=None, progress=SilentProgress())
        assert fresh.dump() == expected
        assert result.kept_aside and fresh.sql("SELECT 1 FROM pg_database WHERE datname = %s", (result.kept_aside,))
        assert fresh.sql("SELECT target FROM audit_log WHERE action = 'restore'") == [(entry.id,)]
    finally:
        destroy(fresh)


@pytest.mark.parametrize("kind", ["physical", "logical"])
def test_corrupt_backup_fails_verify_and_restore_refuses_it(archived: ArchivedCluster, kind: str) -> None:
    a = archived
    _fill(a)
    entry = create_backup(a.settings, kind, SilentProgress())
    a.sql("INSERT INTO notes (body) VALUES ('after the backup')")
    before = a.dump()
    pid = a.cluster.running_pid()
    victim = a.backup_dir / entry.id / entry.manifest.files[0].name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    [result] = verify_backups(a.settings, [entry.id], SilentProgress())
    assert not result.ok
    assert "does not match its sha256" in result.checks[0].detail

    with pytest.raises(LlmobsError, match="is damaged"):
        run_restore(a.settings, a.site, backup_id=entry.id, target=None, progress=SilentProgress())
    assert a.cluster.running_pid() == pid  # never stopped
    assert a.dump() == before
    assert not [p for p in (a.root / "data").iterdir() if "restor" in p.name]


def test_failed_recovery_puts_the_previous_data_directory_back(archived: ArchivedCluster) -> None:
    a = archived
    _fill(a)
    create_backup(a.settings, "physical", SilentProgress())
    t = a.now()
    a.sql("INSERT INTO notes (body) VALUES ('latest')")
    before = a.dump()
    # recovery needs archived WAL after the backup: take it away (the plan still sees it listed
    # when it checks the window, then restore_command cannot find it)
    original = a.site.start_db

    def start_without_archive(progress, *, timeout):  # type: ignore[no-untyped-def]
        shutil.move(a.wal_archive, a.root / "wal-moved")
        a.wal_archive.mkdir()
        owner = (a.root / "wal-moved").stat()
        os.chown(a.wal_archive, owner.st_uid, owner.st_gid)
        return original(progress, timeout=timeout)

    a.site.start_db = start_without_archive  # type: ignore[method-assign]
    a.settings = a.settings.with_overrides(BACKUP_RESTORE_TIMEOUT_SECONDS="30")
    with pytest.raises(LlmobsError):
        run_restore(a.settings, a.site, backup_id=None, target=t, progress=SilentProgress())
    a.site.start_db = original  # type: ignore[method-assign]
    assert a.cluster.running_pid()
    assert a.dump() == before
    assert not [p for p in (a.root / "data").iterdir() if "restor" in p.name]


def _switch_and_wait(a: ArchivedCluster) -> str:
    """Close the current segment and wait until the archive has it; returns its name."""
    name = a.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    a.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while not (a.wal_archive / name).is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (a.wal_archive / name).is_file()
    return name


def test_a_corrupted_archived_wal_segment_fails_verify_by_name_and_restore_rolls_back(
    archived: ArchivedCluster,
) -> None:
    """Issue 18 items 3 and 2: verify reads the WAL it vouches for; a restore through the damaged
    segment fails with the recovery's own reason and leaves the previous cluster running."""
    a = archived
    _fill(a)
    entry = create_backup(a.settings, "physical", SilentProgress())
    a.sql("INSERT INTO notes (body) SELECT 'after ' || g FROM generate_series(1, 2000) g")
    damaged = _switch_and_wait(a)
    target = a.now()
    a.sql("INSERT INTO notes (body) VALUES ('latest')")
    _switch_and_wait(a)
    [result] = verify_backups(a.settings, [entry.id], SilentProgress())
    assert result.ok, result.to_dict()
    assert [c.name for c in result.checks][-1] == "wal content"

    with (a.wal_archive / damaged).open("r+b") as fh:
        fh.seek(5000)  # inside the records of the second page: their checksums no longer match
        fh.write(b"\xff" * 64)
    [result] = verify_backups(a.settings, [entry.id], SilentProgress())
    assert not result.ok
    content = next(c for c in result.checks if c.name == "wal content")
    assert not content.ok and content.detail.startswith(f"segment {damaged} is damaged: "), content.detail
    assert "checksum" in content.detail

    before = a.dump()
    pid = a.cluster.running_pid()
    a.settings = a.settings.with_overrides(BACKUP_RESTORE_TIMEOUT_SECONDS="60")
    with pytest.raises(LlmobsError) as failed:
        run_restore(a.settings, a.site, backup_id=None, target=target, progress=SilentProgress())
    message = failed.value.message
    assert message.startswith("restore failed: recovery ended before configured recovery target was reached")
    assert "back in place" in message
    assert a.cluster.running_pid() and a.cluster.running_pid() != pid
    assert a.dump() == before
    assert not [p for p in (a.root / "data").iterdir() if "restor" in p.name]
