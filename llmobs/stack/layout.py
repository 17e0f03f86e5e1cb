"""Where the local runtime keeps things under the project directory.

.env                 settings and secrets (0600)
data/postgres/       PostgreSQL data directory (owned by PG_OS_USER when run as root)
data/redis/          Redis RDB and append-only files
data/wal-archive/    archived WAL segments (archive_command copies here)
backups/             local backup repository (BACKUP_DIR may move it)
run/                 pid files, the supervisor's state, PostgreSQL's unix socket (run/pg/)
logs/                one log per service, plus llmobs.log (every command llmobs ran)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalLayout:
    root: Path

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pgdata(self) -> Path:
        return self.data / "postgres"

    @property
    def redis_data(self) -> Path:
        return self.data / "redis"

    @property
    def wal_archive(self) -> Path:
        return self.data / "wal-archive"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pg_socket_dir(self) -> Path:
        return self.run / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"
