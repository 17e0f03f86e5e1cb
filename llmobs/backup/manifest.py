"""The manifest of a backup: what it is, when it was taken, and every file with size and sha256.

A backup is complete only once its manifest is written: files first, manifest last, locally and
in S3. The manifest is JSON so that operators (and other tools) can read it.
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from llmobs import __version__
from llmobs.errors import LlmobsError

FORMAT = 1
MANIFEST_NAME = "manifest.json"
BackupType = Literal["physical", "logical", "redis", "grafana"]
BACKUP_TYPES: tuple[str, ...] = ("physical", "logical", "redis", "grafana")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    id: str
    type: str
    started_at: datetime
    finished_at: datetime
    files: list[FileEntry]
    #: PostgreSQL facts (physical and logical backups)
    database: str | None = None
    pg_version: str | None = None
    pg_major: int | None = None
    schema_version: int | None = None
    system_identifier: str | None = None
    #: WAL range of a physical backup: replaying it from start_lsn to end_lsn makes it consistent
    timeline: int | None = None
    start_lsn: str | None = None
    end_lsn: str | None = None
    end_timeline: int | None = None
    wal_segment_size: int | None = None
    compression: str = "none"
    llmobs_version: str = __version__
    host: str = field(default_factory=socket.gethostname)
    #: result of the last `llmobs backup verify` of this copy
    verification: dict[str, Any] | None = None
    format: int = FORMAT

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> FileEntry:
        for f in self.files:
            if f.name == name:
                return f
        raise LlmobsError(f"backup {self.id} has no file {name}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        data["size_bytes"] = self.size_bytes
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, origin: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
            data.pop("size_bytes", None)
            if data.get("format", FORMAT) > FORMAT:
                raise LlmobsError(
                    f"{origin} was written by a newer llmobs (format {data['format']})",
                    hint="upgrade llmobs to read it",
                )
            data["files"] = [FileEntry(**f) for f in data["files"]]
            data["started_at"] = datetime.fromisoformat(data["started_at"])
            data["finished_at"] = datetime.fromisoformat(data["finished_at"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise LlmobsError(f"{origin} is not a valid backup manifest: {exc}") from None


def new_backup_id(
    backup_type: str, now: datetime | None = None, *, taken: set[str] | frozenset[str] = frozenset()
) -> str:
    """``20250102T030405Z-physical``: sorts by time, says what it is, unique among ``taken``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    base = f"{now:%Y%m%dT%H%M%SZ}-{backup_type}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def backup_type_of(backup_id: str) -> str | None:
    """The type an id names (``new_backup_id``'s format), or None for an id of another form."""
    kind = backup_id.split("-")[1] if backup_id.count("-") in (1, 2) else None
    return kind if kind in BACKUP_TYPES else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path) -> list[FileEntry]:
    """Every regular file of a freshly written backup directory, with size and sha256."""
    return [
        FileEntry(p.name, p.stat().st_size, sha256_file(p))
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    ]
