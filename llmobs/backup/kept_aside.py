"""What restores kept aside: the previous PostgreSQL data directory (beside the live one), the
previous database of a logical restore, the previous Redis and Grafana data. Listed and removed
only on the operator's explicit command."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.backup.pgclient import admin_connection
from llmobs.errors import LlmobsError, UsageError

if TYPE_CHECKING:
    from llmobs.backup.paths import BackupPaths
    from llmobs.config import Settings

ASIDE_MARK = ".before-restore-"
DB_MARK = "_before_restore_"


@dataclass(frozen=True)
class KeptAside:
    name: str
    kind: str  # "postgres-data" | "database" | "redis" | "grafana"
    location: str
    size_bytes: int | None
    kept_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "location": self.location,
            "size_bytes": self.size_bytes,
            "kept_at": self.kept_at.isoformat() if self.kept_at else None,
        }


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


@contextlib.contextmanager
def replacing(data_dir: Path, kept: Path, names: Collection[str] | None = None) -> Iterator[None]:
    """Move the entries of ``data_dir`` named in ``names`` (all when None) into ``kept``, for the
    body to fill ``data_dir`` anew. If anything fails, what the body left under those names goes
    and the kept entries come back; an entry never moved is never touched."""
    before = {entry.name for entry in data_dir.iterdir()} if data_dir.is_dir() else set()
    kept.mkdir(parents=True, exist_ok=True)
    try:
        for name in sorted(before):
            if names is None or name in names:
                shutil.move(str(data_dir / name), str(kept / name))
        yield
    except BaseException:
        _put_back(data_dir, kept, before)
        raise


def _put_back(data_dir: Path, kept: Path, before: set[str]) -> None:
    moved = {item.name for item in kept.iterdir()}
    for entry in list(data_dir.iterdir()) if data_dir.is_dir() else []:
        if entry.name in moved or entry.name not in before:  # the failed install's
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for name in moved:
        shutil.move(str(kept / name), str(data_dir / name))
    with contextlib.suppress(OSError):
        kept.rmdir()


def find_kept_aside(settings: Settings, paths: BackupPaths, pgdata: Path | None) -> list[KeptAside]:
    found = []
    if pgdata is not None and pgdata.parent.is_dir():
        for p in sorted(pgdata.parent.glob(f"{pgdata.name}{ASIDE_MARK}*")):
            found.append(KeptAside(p.name, "postgres-data", str(p), _du(p), _mtime(p)))
    if paths.kept_aside_dir.is_dir():
        for p in sorted(paths.kept_aside_dir.iterdir()):
            found.append(KeptAside(p.name, p.name.split("-")[0], str(p), _du(p), _mtime(p)))
    found += _kept_databases(settings)
    return found


def _kept_databases(settings: Settings) -> list[KeptAside]:
    try:
        with admin_connection(settings, dbname="postgres") as conn:
            rows = conn.execute(
                "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                (settings.get_str("DB_NAME") + DB_MARK.replace("_", r"\_") + "%",),
            ).fetchall()
    except LlmobsError:
        return []
    return [KeptAside(name, "database", "PostgreSQL", size, None) for name, size in rows]


def remove_kept_aside(settings: Settings, paths: BackupPaths, pgdata: Path | None, name: str) -> KeptAside:
    for item in find_kept_aside(settings, paths, pgdata):
        if item.name != name:
            continue
        if item.kind == "database":
            from psycopg import sql

            with admin_connection(settings, dbname="postgres") as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        else:
            shutil.rmtree(item.location)
        return item
    raise UsageError(f"nothing kept aside is named {name!r}", hint="`llmobs backup kept-aside` lists them")
