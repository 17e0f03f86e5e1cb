"""Where backups, archived WAL and scratch space are, as seen by this process.

The same code runs on the host (local runtime: directories under the project) and inside a
one-off container of the compose runtime (volumes mounted where BACKUP_DIR and
BACKUP_WAL_ARCHIVE_DIR point). The one difference: in a job container, the repository is shared
with the other jobs' users through its group (``share_with_group``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.job_env import in_job
from llmobs.errors import LlmobsError
from llmobs.proc import OsUser
from llmobs.stack.layout import LocalLayout

if TYPE_CHECKING:
    from llmobs.config import Settings


@dataclass(frozen=True)
class BackupPaths:
    #: the local backup repository: one directory per backup
    backup_dir: Path
    #: where PostgreSQL's archive_command puts WAL segments
    wal_archive: Path
    #: owner of PostgreSQL's files when we run as root (PostgreSQL refuses root)
    os_user: OsUser | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupPaths:
        return cls(
            backup_dir=_setting_path(settings, "BACKUP_DIR", lambda layout: layout.backups),
            wal_archive=_setting_path(settings, "BACKUP_WAL_ARCHIVE_DIR", lambda layout: layout.wal_archive),
            os_user=OsUser.lookup(settings.get_str("PG_OS_USER")) if os.geteuid() == 0 else None,
        )

    @property
    def work_dir(self) -> Path:
        """Scratch space on the backup filesystem (downloads, verification copies)."""
        return self.backup_dir / ".work"

    @property
    def lock_file(self) -> Path:
        return self.backup_dir / ".lock"

    @property
    def kept_aside_dir(self) -> Path:
        """Where Redis and Grafana data replaced by a restore are kept (PostgreSQL's data directory
        is kept beside itself, on its own filesystem, so that putting it back is a rename)."""
        return self.backup_dir / "kept-aside"

    def ensure(self) -> None:
        if in_job():
            os.umask(0o007)  # what this job creates is the group's to read and write
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(exist_ok=True)
        if in_job():
            share_with_group(self.backup_dir)


#: In the compose runtime, backup jobs (uid 1001) and restore jobs (PostgreSQL's uid, with group
#: 1001 added) share the repository through its group: directories group-writable and setgid (new
#: entries keep the group), files group-readable; others have no access. PostgreSQL's tools
#: write their files owner-only (0600), hence the walk.
SHARED_DIR_MODE = 0o2770


def share_with_group(root: Path) -> None:
    """Open what this process owns under ``root`` (not following links) to its group."""
    me = os.geteuid()
    for dirpath, _dirs, files in os.walk(root):
        directory = Path(dirpath)
        if directory.stat().st_uid == me and directory.stat().st_mode & 0o7777 != SHARED_DIR_MODE:
            directory.chmod(SHARED_DIR_MODE)
        for name in files:
            st = (directory / name).lstat()
            if st.st_uid == me and stat.S_ISREG(st.st_mode) and not st.st_mode & stat.S_IRGRP:
                (directory / name).chmod(stat.S_IMODE(st.st_mode) | stat.S_IRGRP)


def _setting_path(settings: Settings, name: str, default: Callable[[LocalLayout], Path]) -> Path:
    """The path a setting names (relative to the project), else the local runtime's default."""
    value = settings.get_str(name)
    if value:
        path = Path(value).expanduser()
        if not path.is_absolute():
            if settings.project_dir is None:
                raise LlmobsError(
                    f"{name} is a relative path but there is no project directory",
                    hint=f"set {name} to an absolute path",
                )
            path = settings.project_dir / path
        return path
    if settings.project_dir is None:
        raise LlmobsError(f"{name} is not set and there is no project directory", hint=f"set {name}")
    return default(LocalLayout(settings.project_dir))
