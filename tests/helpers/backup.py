"""A PostgreSQL cluster with WAL archiving and a backup repository (the ``archived`` fixture of
tests/backup/conftest.py), and a moto S3 server.

Each test gets its own cluster (restores replace its data directory). Servers run on free
loopback ports and are stopped by pid (pg_ctl) when the test ends.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from llmobs.backup.sites import ClusterSite
from llmobs.config import Settings, generate_password
from llmobs.stack.postgres import PgCluster, PgConfig

from helpers.common import PgServer, free_port, make_workdir, pg_os_user, settings_env

DB_NAME = "llm_observatory"


@dataclass
class ArchivedCluster:
    root: Path
    cluster: PgCluster
    site: ClusterSite
    settings: Settings
    env: dict[str, str]

    @property
    def backup_dir(self) -> Path:
        return self.root / "backups"

    @property
    def wal_archive(self) -> Path:
        return self.root / "data" / "wal-archive"

    def sql(self, statement: str, params: tuple | None = None) -> list[tuple]:
        from llmobs.store.db import connect

        with connect(self.settings, "admin", autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def now(self) -> datetime:
        """The server's clock after the last commit; later commits get later timestamps."""
        when = self.sql("SELECT clock_timestamp()")[0][0]
        time.sleep(0.05)
        return when

    def dump(self) -> str:
        """A plain dump of the stack's database, without the audit log and the backup records
        (backups and restores append to them)."""
        env = {"PGPASSWORD": self.settings.secret("DB_PASSWORD"), "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [
                str(self.cluster.binaries("pg_dump")),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.settings.get_int("DB_PORT")),
                "-U",
                "postgres",
                "--exclude-table-data=audit_log",
                "--exclude-table-data=llmobs_backups",
                DB_NAME,
            ],
            env=env,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return "\n".join(
            line
            for line in out.splitlines()
            if not re.search(r"audit_log_id_seq', \d+|^-- Dumped (from|by)|^\\(un)?restrict ", line)
        )


def make_archived_cluster(**extra: str) -> ArchivedCluster:
    from llmobs.store.bootstrap import bootstrap

    root = make_workdir("llmobs-bk-")
    data = root / "data"
    cluster = PgCluster(data / "postgres", log_file=root / "logs" / "postgres.log", os_user=pg_os_user())
    socket_dir = root / "run" / "pg"
    archive = data / "wal-archive"
    cluster.prepare_dirs(archive, socket_dir)
    password = generate_password()
    cluster.init(password)
    port = free_port()
    config = PgConfig("127.0.0.1", port, socket_dir, wal_archive_dir=archive, archive_timeout=60)
    cluster.write_config(config)
    cluster.start()
    server = PgServer("127.0.0.1", port, password, generate_password(), generate_password(), cluster)
    env = settings_env(
        server, None, DB_NAME, BACKUP_DIR=str(root / "backups"), BACKUP_WAL_ARCHIVE_DIR=str(archive), **extra
    )
    settings = Settings(env, None)
    bootstrap(settings)
    return ArchivedCluster(root, cluster, ClusterSite(cluster, config), settings, env)


def destroy(archived: ArchivedCluster) -> None:
    archived.cluster.stop(mode="immediate")
    shutil.rmtree(archived.root, ignore_errors=True)


@contextmanager
def moto_server() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on a loopback port; yields its URL."""
    import sys
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
