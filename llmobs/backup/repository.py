"""The backup repository: the local backup directory and, when configured, S3; plus the WAL
archive (local) and its copy in S3 (``wal/``).

Layout, the same in both stores::

    <id>/manifest.json      written last: a backup without it is incomplete
    <id>/<files>            base.tar.gz, pg_wal.tar.gz, backup_manifest | dump.pgdump | dump.rdb | ...
    wal/<segment>           S3 only: shipped copies of the archive
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.manifest import MANIFEST_NAME, Manifest, backup_type_of
from llmobs.backup.paths import BackupPaths
from llmobs.backup.storage import LocalStore, S3Store, Store
from llmobs.backup.wal import HISTORY_RE, is_wal_file, parse_history
from llmobs.errors import LlmobsError, UsageError

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^\d{8}T\d{6}Z-[a-z]+(-\d+)?$")
WAL_PREFIX = "wal/"
TIMELINES_PREFIX = "timelines/"


@dataclass
class BackupEntry:
    manifest: Manifest
    locations: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def type(self) -> str:
        return self.manifest.type


@dataclass(frozen=True)
class DamagedBackup:
    """A backup directory (or S3 prefix) whose manifest is missing or unreadable: it cannot be
    verified nor restored, and must be seen rather than silently skipped."""

    id: str
    location: str
    problem: str

    @property
    def type(self) -> str:
        return backup_type_of(self.id) or "?"

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type, "location": self.location, "problem": self.problem}


class Repository:
    def __init__(self, paths: BackupPaths, s3: S3Store | None = None) -> None:
        self.paths = paths
        self.local = LocalStore(paths.backup_dir)
        self.s3 = s3
        self.wal_archive = LocalStore(paths.wal_archive)
        #: WAL files downloaded from S3 for a restore (the restore_command looks here second)
        self.wal_cache = paths.work_dir / "wal-cache"

    @classmethod
    def from_settings(cls, settings: Settings, *, use_s3: bool = True) -> Repository:
        return cls(BackupPaths.from_settings(settings), S3Store.from_settings(settings) if use_s3 else None)

    def stores(self) -> list[Store]:
        return [self.local, self.s3] if self.s3 else [self.local]

    def store(self, name: str) -> Store:
        for s in self.stores():
            if s.name == name:
                return s
        raise LlmobsError(f"no {name} backup store is configured")

    # -- backups --------------------------------------------------------------------------------

    def backups(self, *, remote: bool = True) -> list[BackupEntry]:
        """Every complete backup, oldest first, with where copies of it are."""
        found: dict[str, BackupEntry] = {}
        for store in self.stores() if remote else [self.local]:
            for manifest in self._scan(store)[0]:
                entry = found.setdefault(manifest.id, BackupEntry(manifest))
                entry.locations.append(store.name)
        return sorted(found.values(), key=lambda e: (e.manifest.finished_at, e.id))

    def damaged(self, *, remote: bool = True) -> list[DamagedBackup]:
        """Backups whose manifest is unreadable (or, locally, missing), by id."""
        return sorted(
            (d for store in (self.stores() if remote else [self.local]) for d in self._scan(store)[1]),
            key=lambda d: (d.id, d.location),
        )

    def _scan(self, store: Store) -> tuple[list[Manifest], list[DamagedBackup]]:
        damaged = []
        if isinstance(store, LocalStore):
            root = self.paths.backup_dir
            dirs = [d for d in (sorted(root.iterdir()) if root.is_dir() else []) if ID_RE.match(d.name) and d.is_dir()]
            # a finished backup directory always has its manifest (written before the rename)
            damaged = [
                DamagedBackup(d.name, store.name, f"{MANIFEST_NAME} is missing")
                for d in dirs
                if not (d / MANIFEST_NAME).is_file()
            ]
            keys = [f"{d.name}/{MANIFEST_NAME}" for d in dirs if (d / MANIFEST_NAME).is_file()]
        else:
            keys = [
                o.key for o in store.list() if o.key.endswith(f"/{MANIFEST_NAME}") and ID_RE.match(o.key.split("/")[0])
            ]
        manifests = []
        for key in keys:
            try:
                manifests.append(Manifest.from_json(store.get_bytes(key), origin=f"{store.describe()}/{key}"))
            except LlmobsError as exc:
                log.warning("damaged backup %s: %s", key, exc.message)
                damaged.append(DamagedBackup(key.split("/")[0], store.name, exc.message))
        return manifests, damaged

    def get(self, backup_id: str, *, remote: bool = True) -> BackupEntry:
        for entry in self.backups(remote=remote):
            if entry.id == backup_id:
                return entry
        raise UsageError(f"no backup with id {backup_id!r}", hint="`llmobs backup list` shows the backups")

    def local_dir(self, backup_id: str) -> Path:
        return self.paths.backup_dir / backup_id

    def save_manifest(self, manifest: Manifest, locations: list[str]) -> None:
        for name in locations:
            self.store(name).put_bytes(f"{manifest.id}/{MANIFEST_NAME}", manifest.to_json().encode())

    def upload(self, entry: BackupEntry) -> None:
        """Copy a local backup to S3: its files, then its manifest (which makes it complete)."""
        if self.s3 is None or "s3" in entry.locations:
            return
        directory = self.local_dir(entry.id)
        for f in entry.manifest.files:
            self.s3.put_file(f"{entry.id}/{f.name}", directory / f.name)
        self.s3.put_bytes(f"{entry.id}/{MANIFEST_NAME}", entry.manifest.to_json().encode())
        entry.locations.append("s3")

    def fetch(self, entry: BackupEntry) -> Path:
        """A directory holding the backup's files: the local copy, else a download from S3."""
        if "local" in entry.locations:
            return self.local_dir(entry.id)
        dest = self.paths.work_dir / "download" / entry.id
        dest.mkdir(parents=True, exist_ok=True)
        store = self.store(entry.locations[0])
        for f in entry.manifest.files:
            target = dest / f.name
            if not (target.is_file() and target.stat().st_size == f.size):
                store.get_file(f"{entry.id}/{f.name}", target)
        return dest

    def delete(self, entry: BackupEntry, location: str) -> None:
        """Remove one copy: its manifest first, so a half-deleted backup is never taken for whole."""
        store = self.store(location)
        store.delete([f"{entry.id}/{MANIFEST_NAME}"])
        store.delete([f"{entry.id}/{f.name}" for f in entry.manifest.files])
        if location == "local":
            shutil.rmtree(self.local_dir(entry.id), ignore_errors=True)
        entry.locations.remove(location)

    # -- WAL ------------------------------------------------------------------------------------

    def wal_files(self, *, remote: bool = True) -> dict[str, list[str]]:
        """WAL file name -> where copies are ("local", "s3")."""
        found: dict[str, list[str]] = {}
        for obj in self.wal_archive.list():
            if is_wal_file(obj.key):
                found.setdefault(obj.key, []).append("local")
        if remote and self.s3 is not None:
            for obj in self.s3.list(WAL_PREFIX):
                name = obj.key[len(WAL_PREFIX) :]
                if is_wal_file(name):
                    found.setdefault(name, []).append("s3")
        return found

    def histories(self, wal_files: dict[str, list[str]]) -> dict[int, list[tuple[int, int]]]:
        """Timeline -> its history (ancestors and switch points), from the archive's .history files."""
        result = {}
        for name, where in wal_files.items():
            match = HISTORY_RE.match(name)
            if match:
                result[int(match[1], 16)] = parse_history(self.read_wal(name, where).decode())
        return result

    def read_wal(self, name: str, where: list[str]) -> bytes:
        if "local" in where:
            return self.wal_archive.get_bytes(name)
        assert self.s3 is not None
        return self.s3.get_bytes(WAL_PREFIX + name)

    def wal_path(self, name: str, where: list[str]) -> Path:
        """A local path of a WAL file: the archive's, else a download into the WAL cache."""
        if "local" in where:
            return self.wal_archive.path(name)
        dest = self.wal_cache
        dest.mkdir(parents=True, exist_ok=True)
        if not (dest / name).is_file():
            assert self.s3 is not None
            self.s3.get_file(WAL_PREFIX + name, dest / name)
        return dest / name

    def ship_wal(self) -> list[str]:
        """Upload archived WAL files that S3 does not have yet, oldest first."""
        if self.s3 is None:
            return []
        remote = {o.key[len(WAL_PREFIX) :] for o in self.s3.list(WAL_PREFIX)}
        shipped = []
        for obj in self.wal_archive.list():
            if is_wal_file(obj.key) and obj.key not in remote:
                self.s3.put_file(WAL_PREFIX + obj.key, self.wal_archive.path(obj.key))
                shipped.append(obj.key)
        return shipped

    def record_timeline(self, timeline: int, info: dict[str, object]) -> None:
        """Remember when a restore created ``timeline`` (see ``pitr.choose_timeline``)."""
        data = json.dumps({"timeline": timeline, **info}, default=str).encode()
        for store in self.stores():
            store.put_bytes(f"{TIMELINES_PREFIX}{timeline:08X}.json", data)

    def timeline_births(self) -> dict[int, datetime]:
        """Timeline -> when the restore that created it promoted, from every store."""
        births: dict[int, datetime] = {}
        for store in self.stores():
            for obj in store.list(TIMELINES_PREFIX):
                try:
                    info = json.loads(store.get_bytes(obj.key))
                    births[int(info["timeline"])] = datetime.fromisoformat(info["born_at"])
                except (LlmobsError, ValueError, KeyError, TypeError) as exc:
                    log.warning("skipping %s: %s", obj.key, exc)
        return births

    def delete_wal(self, names: list[str], location: str) -> None:
        if location == "local":
            self.wal_archive.delete(names)
        else:
            self.store(location).delete([WAL_PREFIX + n for n in names])
