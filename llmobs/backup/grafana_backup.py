"""Grafana backups: its data directory as one tar.gz, with grafana.db copied through SQLite's
online backup API so that the copy is consistent while Grafana runs."""

from __future__ import annotations

import sqlite3
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.extract import chown_tree
from llmobs.backup.kept_aside import replacing
from llmobs.backup.manifest import Manifest, describe_files
from llmobs.errors import LlmobsError
from llmobs.proc import run

if TYPE_CHECKING:
    from llmobs.progress import Progress

ARCHIVE = "grafana.tar.gz"
DB_NAME = "grafana.db"
_SKIP = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"}


def create_grafana(data_dir: Path, work: Path, backup_id: str, progress: Progress) -> Manifest:
    if not data_dir.is_dir():
        raise LlmobsError(f"Grafana's data directory {data_dir} does not exist")
    progress.step(f"Archiving Grafana's data ({data_dir})")
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(dir=work) as tmp, tarfile.open(work / ARCHIVE, "w:gz", compresslevel=6) as tar:
        if (data_dir / DB_NAME).is_file():
            copy = Path(tmp) / DB_NAME
            source = sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True)
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
            tar.add(copy, arcname=DB_NAME)
        for entry in sorted(data_dir.iterdir()):
            if entry.name not in _SKIP:
                tar.add(entry, arcname=entry.name)
    return Manifest(
        id=backup_id, type="grafana", started_at=started, finished_at=datetime.now(UTC), files=describe_files(work)
    )


def check_archive(archive: Path) -> int:
    """The archive reads to the end and holds a readable grafana.db. Returns its member count."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            db = tar.extractfile(DB_NAME) if DB_NAME in tar.getnames() else None
            if db is not None and db.read(16) != b"SQLite format 3\x00":
                raise LlmobsError(f"{archive.name}: grafana.db is not an SQLite database")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LlmobsError(f"{archive.name} is damaged: {exc}") from None
    return len(members)


def install_grafana(archive: Path, data_dir: Path, kept_aside: Path) -> None:
    """Replace Grafana's data (Grafana must be stopped) with the archive's; the current contents
    move to ``kept_aside`` (and back if this fails). Files get the owner of the data directory
    (Grafana's user)."""
    check_archive(archive)
    owner = data_dir.stat()
    with replacing(data_dir, kept_aside):
        # GNU tar, as for physical backups: it refuses members outside the directory, and Python
        # before 3.11.4 (Debian 12's 3.11.2, the app image's) has no extraction filter.
        run(["tar", "--no-same-owner", "-x", "-z", "-f", archive, "-C", data_dir])
        chown_tree(data_dir, owner.st_uid, owner.st_gid)
