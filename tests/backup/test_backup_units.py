"""The parts of backup and restore that need no server: WAL names and timeline chains, the
retention policy over a simulated week, target times, cron expressions, Grafana and Redis
data-directory restores, the lock."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmobs.backup.grafana_backup import create_grafana, install_grafana
from llmobs.backup.lock import backup_lock
from llmobs.backup.manifest import FileEntry, Manifest
from llmobs.backup.pitr import parse_target_time
from llmobs.backup.redis_backup import AOF_DIR, AOF_MANIFEST, RDB_FILE, install_rdb
from llmobs.backup.retention import RetentionPolicy, kept_backups
from llmobs.backup.schedule import cron_trigger
from llmobs.backup.wal import chain_steps, follow_chain, parse_lsn, removable_wal, segment_name
from llmobs.errors import AlreadyRunning, ConfigError, UsageError
from llmobs.progress import SilentProgress

SEG = 16 * 1024 * 1024


def test_segment_names_and_lsns() -> None:
    assert segment_name(1, 0x1FF, SEG) == "0000000100000001000000FF"
    assert parse_lsn("1/FF000028") // SEG == 0x1FF
    assert removable_wal(
        [
            "000000010000000000000003",
            "000000020000000000000004.partial",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000020000000000000005",
        ],
        5,
        SEG,
    ) == ["000000010000000000000002.00000028.backup", "000000010000000000000003", "000000020000000000000004.partial"]


def test_chain_follows_timeline_switches_and_finds_gaps() -> None:
    history = [(1, parse_lsn("0/5000100")), (2, parse_lsn("0/8000000"))]
    steps = chain_steps(1, parse_lsn("0/3000028"), 3, history, SEG)
    assert steps is not None
    assert [(s.timeline, s.first_segno, s.last_segno) for s in steps] == [(1, 3, 4), (2, 5, 7), (3, 8, None)]
    have = (
        {segment_name(1, n, SEG) for n in (3, 4)}
        | {segment_name(2, n, SEG) for n in (5, 6, 7)}
        | {segment_name(3, n, SEG) for n in (8, 9)}
    )
    chain = follow_chain(steps, have, SEG)
    assert chain.ok and chain.last_segment == segment_name(3, 9, SEG)
    chain = follow_chain(steps, have - {segment_name(2, 6, SEG)}, SEG)
    assert chain.gap == segment_name(2, 6, SEG) and chain.last_segment == segment_name(2, 5, SEG)
    # a base taken on timeline 1 after it was left is not in timeline 3's history
    assert chain_steps(1, parse_lsn("0/6000000"), 3, history, SEG) is None


def _manifest(backup_id: str, when: datetime, kind: str = "physical") -> Manifest:
    return Manifest(backup_id, kind, when - timedelta(minutes=5), when, [FileEntry("f", 1, "0" * 64)])


def test_retention_over_a_simulated_week() -> None:
    now = datetime(2025, 3, 16, 12, 0, tzinfo=UTC)  # a Sunday
    manifests = [
        _manifest(f"d{day}h{hour}", now - timedelta(days=day, hours=hour)) for day in range(0, 40) for hour in (1, 7)
    ]
    manifests.append(_manifest("logical-old", now - timedelta(days=30), "logical"))
    kept = kept_backups(manifests, RetentionPolicy(keep_daily=3, keep_weekly=2, keep_monthly=2), now)
    # newest of each of the last 3 days; newest of this ISO week (same as today) and of last week
    # (Sunday 9 March); newest of this month (today) and of February (28th); the only logical one
    assert sorted(kept) == sorted(["d0h1", "d1h1", "d2h1", "d7h1", "d16h1", "logical-old"])
    assert kept["d0h1"] == ["newest", "daily", "weekly", "monthly"]
    by_age = kept_backups(manifests, RetentionPolicy(0, 0, 0, retention_days=2), now)
    assert sorted(by_age) == sorted(["d0h1", "d0h7", "d1h1", "d1h7", "logical-old"])
    # the upper bound wins over every rule, the newest backup included (erased data must go)
    bounded = kept_backups(manifests, RetentionPolicy(keep_daily=3, keep_weekly=2, keep_monthly=2, max_age_days=5), now)
    assert sorted(bounded) == sorted(["d0h1", "d1h1", "d2h1"])


def test_target_time_needs_a_time_zone() -> None:
    assert parse_target_time("2025-03-01T14:30:00Z") == datetime(2025, 3, 1, 14, 30, tzinfo=UTC)
    assert parse_target_time("2025-03-01 16:30:00+02:00").astimezone(UTC).hour == 14
    with pytest.raises(UsageError, match="no time zone"):
        parse_target_time("2025-03-01T14:30:00")
    with pytest.raises(UsageError, match="not an ISO 8601"):
        parse_target_time("yesterday")


def test_cron_expressions() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert cron_trigger("X", "0 2 * * *").get_next_fire_time(None, start) == datetime(2025, 1, 1, 2, tzinfo=UTC)
    assert cron_trigger("X", "*/5 * * * * *").get_next_fire_time(None, start + timedelta(seconds=1)).second == 5
    with pytest.raises(ConfigError, match="BACKUP_SCHEDULE_PHYSICAL"):
        cron_trigger("BACKUP_SCHEDULE_PHYSICAL", "every day")


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    with (
        backup_lock(tmp_path / ".lock", "first"),
        pytest.raises(AlreadyRunning, match="first, pid"),
        backup_lock(tmp_path / ".lock", "second"),
    ):
        pass
    with backup_lock(tmp_path / ".lock", "third"):
        pass


def test_grafana_backup_and_restore_of_its_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "grafana"
    (data / "plugins" / "panel").mkdir(parents=True)
    (data / "plugins" / "panel" / "plugin.json").write_text('{"id": "panel"}')
    db = sqlite3.connect(data / "grafana.db")
    db.execute("CREATE TABLE dashboard (id integer, title text)")
    db.execute("INSERT INTO dashboard VALUES (1, 'LLM overview')")
    db.commit()  # left open, as a running Grafana would
    work = tmp_path / "backup"
    work.mkdir()
    manifest = create_grafana(data, work, "20250101T000000Z-grafana", SilentProgress())
    assert [f.name for f in manifest.files] == ["grafana.tar.gz"]
    db.execute("DELETE FROM dashboard")
    db.commit()
    db.close()
    (data / "plugins" / "panel" / "plugin.json").unlink()
    install_grafana(work / "grafana.tar.gz", data, tmp_path / "kept")
    restored = sqlite3.connect(data / "grafana.db").execute("SELECT title FROM dashboard").fetchall()
    assert restored == [("LLM overview",)]
    assert (data / "plugins" / "panel" / "plugin.json").read_text() == '{"id": "panel"}'
    assert (tmp_path / "kept" / "grafana.db").is_file()


def test_rdb_is_installed_as_dump_and_as_aof_base(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    (data / AOF_DIR).mkdir(parents=True)
    (data / AOF_DIR / "old.aof").write_text("old")
    rdb = tmp_path / "snap.rdb"
    rdb.write_bytes(b"REDIS0010...")
    install_rdb(rdb, data, tmp_path / "kept")
    assert (data / RDB_FILE).read_bytes() == b"REDIS0010..."
    assert "type b" in (data / AOF_DIR / AOF_MANIFEST).read_text()
    assert (tmp_path / "kept" / AOF_DIR / "old.aof").read_text() == "old"


def test_a_failed_install_puts_the_previous_data_back(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    (data / AOF_DIR).mkdir(parents=True)
    (data / AOF_DIR / "old.aof").write_text("old")
    (data / RDB_FILE).write_text("old rdb")
    (data / "other").write_text("not Redis's to replace")
    with pytest.raises(FileNotFoundError):
        install_rdb(tmp_path / "missing.rdb", data, tmp_path / "kept")
    assert sorted(p.name for p in data.iterdir()) == sorted([AOF_DIR, RDB_FILE, "other"])
    assert (data / RDB_FILE).read_text() == "old rdb" and (data / AOF_DIR / "old.aof").read_text() == "old"
    assert not (tmp_path / "kept").exists()
