"""S3 through a real S3-compatible server process (moto's standalone server on loopback):
uploads (multipart, server-side encryption), a restore from S3 alone, and retention over a
simulated week locally and in S3, then PITR inside the kept window."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from llmobs.backup.jobs import create_backup, list_backups, prune_backups, verify_backups
from llmobs.backup.manifest import FileEntry, Manifest
from llmobs.backup.paths import BackupPaths
from llmobs.backup.repository import Repository
from llmobs.backup.restore import run_restore
from llmobs.backup.retention import RetentionPolicy, prune
from llmobs.backup.storage import S3Store
from llmobs.backup.wal import segment_name
from llmobs.errors import UsageError
from llmobs.progress import SilentProgress

from helpers.backup import ArchivedCluster, destroy, make_archived_cluster, moto_server

BUCKET = "llmobs-backups"
SEG = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Store(BUCKET, endpoint_url=s3_endpoint)
    if BUCKET not in [b["Name"] for b in store.client.list_buckets()["Buckets"]]:
        store.client.create_bucket(Bucket=BUCKET)
    return s3_endpoint


@pytest.fixture
def s3_cluster(aws_env: str, request: pytest.FixtureRequest) -> Iterator[ArchivedCluster]:
    prefix = f"t{os.getpid()}-{request.node.name[-20:]}-{time.monotonic_ns()}"
    a = make_archived_cluster(
        BACKUP_S3_BUCKET=BUCKET,
        BACKUP_S3_PREFIX=prefix,
        BACKUP_S3_ENDPOINT_URL=aws_env,
        BACKUP_S3_SSE="AES256",
        BACKUP_S3_MULTIPART_MB="5",
        BACKUP_COMPRESSION_LEVEL="0",
    )
    try:
        yield a
    finally:
        destroy(a)


def _s3(a: ArchivedCluster) -> S3Store:
    store = S3Store.from_settings(a.settings)
    assert store is not None
    return store


def test_backup_goes_to_s3_and_restores_from_s3_alone(s3_cluster: ArchivedCluster) -> None:
    a = s3_cluster
    a.sql("CREATE TABLE facts (id int PRIMARY KEY, body text)")
    entry = create_backup(a.settings, "physical", SilentProgress())
    assert entry.locations == ["local", "s3"]
    a.sql("INSERT INTO facts SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g")
    target = a.now()
    expected = a.dump()
    a.sql("DELETE FROM facts")
    a.sql("SELECT pg_switch_wal()")

    store = _s3(a)
    base = store.client.head_object(Bucket=BUCKET, Key=f"{store.prefix}/{entry.id}/base.tar")
    assert base["ServerSideEncryption"] == "AES256"
    assert "-" in base["ETag"]  # uploaded in parts (> BACKUP_S3_MULTIPART_MB)
    [verified] = verify_backups(a.settings, [entry.id], SilentProgress())
    assert verified.ok

    # Lose the local repository and the local WAL archive: S3 has everything.
    create_backup(a.settings, "logical", SilentProgress())  # ships the WAL written since
    shutil.rmtree(a.backup_dir / entry.id)
    for segment in a.wal_archive.iterdir():
        segment.unlink()
    listing = list_backups(a.settings)
    assert [b.locations for b in listing.backups if b.id == entry.id] == [["s3"]]
    result = run_restore(a.settings, a.site, backup_id=None, target=target, progress=SilentProgress())
    assert result.backup_id == entry.id
    assert a.dump() == expected


def _fake_backup(repo: Repository, backup_id: str, when: datetime, start_segno: int) -> None:
    manifest = Manifest(
        backup_id,
        "physical",
        when - timedelta(minutes=10),
        when,
        [FileEntry("base.tar", 4, "ab" * 32)],
        timeline=1,
        start_lsn=f"0/{start_segno * SEG:X}",
        end_lsn=f"0/{start_segno * SEG + 100:X}",
        wal_segment_size=SEG,
    )
    for store in repo.stores():
        store.put_bytes(f"{backup_id}/base.tar", b"base")
        store.put_bytes(f"{backup_id}/manifest.json", manifest.to_json().encode())


def test_retention_over_a_simulated_week_locally_and_in_s3(aws_env: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2025, 3, 16, 23, 0, tzinfo=UTC)
    repo = Repository(
        BackupPaths(tmp_path / "backups", tmp_path / "wal"),
        S3Store(BUCKET, f"week-{time.monotonic_ns()}", endpoint_url=aws_env),
    )
    segno = 2
    ids = []
    for day in range(6, -1, -1):  # a week, two backups a day, a WAL segment every few hours
        for hour in (3, 15):
            when = now - timedelta(days=day) - timedelta(hours=23 - hour)
            backup_id = f"{when:%Y%m%dT%H%M%SZ}-physical"
            _fake_backup(repo, backup_id, when, segno)
            ids.append((backup_id, segno))
            for n in range(segno, segno + 3):
                (tmp_path / "wal").mkdir(exist_ok=True)
                (tmp_path / "wal" / segment_name(1, n, SEG)).write_bytes(b"w")
            segno += 3
    (tmp_path / "wal" / "00000002.history").write_text("1\t0/5000000\tbefore\n")
    repo.ship_wal()

    result = prune(repo, RetentionPolicy(keep_daily=3, keep_weekly=0, keep_monthly=0), now)
    expected = [i for i, _ in ids[-6:][1::2]]  # the 15:00 backup of each of the last three days
    for store in repo.stores():
        kept = sorted({o.key.split("/")[0] for o in store.list() if o.key.endswith("manifest.json")})
        assert kept == sorted(expected), store.name
    oldest_kept_segno = dict(ids)[expected[0]]
    for location in ("local", "s3"):
        names = [n for n, where in repo.wal_files().items() if location in where]
        segments = sorted(n for n in names if not n.endswith(".history"))
        assert segments[0] == segment_name(1, oldest_kept_segno, SEG)
        assert "00000002.history" in names
    assert len(result.deleted) == 2 * (len(ids) - 3)

    # An upper bound (`prune --max-age`) overrides the keep rules: nothing older stays anywhere,
    # and with no physical backup left, no WAL either (erased data must leave the backups).
    bounded = prune(repo, RetentionPolicy(keep_daily=3, keep_weekly=0, keep_monthly=0, max_age_days=1), now)
    assert sorted(bounded.kept) == [expected[-1]]
    later = prune(repo, RetentionPolicy(keep_daily=3, max_age_days=1), now + timedelta(days=3))
    assert later.kept == {} and later.deleted
    for store in repo.stores():
        assert not [o for o in store.list() if o.key.endswith("manifest.json")], store.name
    assert [n for n in repo.wal_files() if not n.endswith(".history")] == []
    assert "00000002.history" in repo.wal_files()


def test_pitr_inside_the_kept_window_after_prune(s3_cluster: ArchivedCluster) -> None:
    a = s3_cluster
    a.sql("CREATE TABLE timeline_rows (id int)")
    times = []
    for i in range(3):
        create_backup(a.settings, "physical", SilentProgress())
        a.sql("INSERT INTO timeline_rows VALUES (%s)", (i,))
        times.append(a.now())
    expected_last = a.dump()
    a.settings = a.settings.with_overrides(BACKUP_KEEP_DAILY="1", BACKUP_KEEP_WEEKLY="0", BACKUP_KEEP_MONTHLY="0")
    result = prune_backups(a.settings, dry_run=False)
    assert len(result.deleted) == 4  # two older backups, local and S3
    assert result.wal_deleted.get("local") and result.wal_deleted.get("s3")
    listing = list_backups(a.settings)
    assert len(listing.backups) == 1
    with pytest.raises(UsageError, match="before the earliest restorable point"):
        run_restore(a.settings, a.site, backup_id=None, target=times[0], progress=SilentProgress())
    a.sql("TRUNCATE timeline_rows")
    run_restore(a.settings, a.site, backup_id=None, target=times[2], progress=SilentProgress())
    assert a.dump() == expected_last
    assert a.sql("SELECT count(*) FROM timeline_rows") == [(3,)]
