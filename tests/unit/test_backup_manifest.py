"""Backup manifests and ids: ids sort by time and say their type; a manifest survives JSON; a
manifest from a newer llmobs or a damaged one is refused with a clear error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmobs.backup.manifest import FORMAT, FileEntry, Manifest, backup_type_of, new_backup_id
from llmobs.errors import LlmobsError

NOON = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "now", "taken", "expected"),
    [
        ("physical", NOON, set(), "20250102T120000Z-physical"),
        ("logical", NOON.astimezone(timezone(timedelta(hours=2))), set(), "20250102T120000Z-logical"),  # in UTC
        ("redis", NOON, {"20250102T120000Z-redis"}, "20250102T120000Z-redis-2"),
        ("redis", NOON, {"20250102T120000Z-redis", "20250102T120000Z-redis-2"}, "20250102T120000Z-redis-3"),
    ],
)
def test_backup_ids_are_unique_and_in_utc(kind: str, now: datetime, taken: set[str], expected: str) -> None:
    assert new_backup_id(kind, now, taken=taken) == expected


def test_backup_ids_sort_by_time() -> None:
    ids = [new_backup_id("physical", NOON + timedelta(seconds=s)) for s in (3600, 1, 86400 * 40)]
    assert sorted(ids) == [ids[1], ids[0], ids[2]]


@pytest.mark.parametrize(
    ("backup_id", "kind"),
    [
        ("20250102T120000Z-physical", "physical"),
        ("20250102T120000Z-logical-2", "logical"),
        ("20250102T120000Z-grafana", "grafana"),
        ("20250102T120000Z-tarball", None),
        ("physical", None),
        ("a-physical-b-c", None),
    ],
)
def test_the_type_an_id_names(backup_id: str, kind: str | None) -> None:
    assert backup_type_of(backup_id) == kind


def manifest(**extra: object) -> Manifest:
    return Manifest(
        id="20250102T120000Z-physical",
        type="physical",
        started_at=NOON,
        finished_at=NOON + timedelta(minutes=3),
        files=[FileEntry("base.tar.gz", 1000, "ab" * 32), FileEntry("pg_wal.tar.gz", 24, "cd" * 32)],
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"timeline": 3, "start_lsn": "0/2000028", "end_lsn": "0/2000100", "pg_major": 15},
        {"verification": {"ok": True, "at": "2025-01-02T13:00:00+00:00"}, "compression": "gzip"},
    ],
)
def test_a_manifest_survives_json(extra: dict[str, object]) -> None:
    original = manifest(**extra)
    again = Manifest.from_json(original.to_json())
    assert again == original and again.size_bytes == 1024


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format=FORMAT + 1), "written by a newer llmobs"),
        (lambda d: d.pop("files"), "not a valid backup manifest"),
        (lambda d: d.update(started_at="last tuesday"), "not a valid backup manifest"),
        (lambda d: d.update(unknown_field=1), "not a valid backup manifest"),
    ],
)
def test_a_newer_or_damaged_manifest_is_refused(change: object, message: str) -> None:
    data = json.loads(manifest().to_json())
    change(data)  # type: ignore[operator]
    with pytest.raises(LlmobsError, match=message):
        Manifest.from_json(json.dumps(data))


def test_a_missing_file_is_named() -> None:
    with pytest.raises(LlmobsError, match=r"has no file wal\.tar"):
        manifest().file("wal.tar")
