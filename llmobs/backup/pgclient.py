"""Running PostgreSQL's client tools (pg_dump, pg_basebackup, ...) as the superuser, and the
facts about the server that a manifest records.

The password travels in a PGPASSFILE of mode 0600 in a private temporary directory, removed
afterwards: never in argv (visible in ``ps``) and never in a logged connection string.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.stack.postgres import PgBinaries
from llmobs.store.db import SUPERUSER, connect

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings


@dataclass(frozen=True)
class ServerFacts:
    version: str
    major: int
    system_identifier: str
    wal_segment_size: int
    archive_mode: str
    schema_version: int | None
    timescaledb: str | None
    timeline: int


def server_facts(conn: psycopg.Connection) -> ServerFacts:
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int / 10000, "
        "(SELECT system_identifier::text FROM pg_control_system()), "
        "pg_size_bytes(current_setting('wal_segment_size')), current_setting('archive_mode'), "
        "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
        "(SELECT timeline_id FROM pg_control_checkpoint())"
    ).fetchone()
    assert row is not None
    schema_version = None
    if conn.execute("SELECT to_regclass('llmobs_schema_migrations') IS NOT NULL").fetchone()[0]:
        schema_version = conn.execute("SELECT max(version) FROM llmobs_schema_migrations").fetchone()[0]
    return ServerFacts(version=row[0].split()[0], major=row[1], system_identifier=row[2], wal_segment_size=row[3],
                       archive_mode=row[4], schema_version=schema_version, timescaledb=row[5], timeline=row[6])


def binaries_for(settings: Settings, major: int | None) -> PgBinaries:
    """PostgreSQL's programs matching the server's major version (pg_basebackup and
    pg_verifybackup must match it)."""
    return PgBinaries.find(settings.get_str("PG_BIN_DIR"), major)


def admin_connection(settings: Settings, dbname: str | None = None) -> psycopg.Connection:
    return connect(settings, "admin", dbname=dbname, autocommit=True, connect_timeout=10)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def client_env(settings: Settings, *, dbname: str | None = None) -> Iterator[dict[str, str]]:
    """Environment for a client tool connecting as the superuser; the password in a 0600 file."""
    private = Path(tempfile.mkdtemp(prefix="llmobs-pg-"))
    try:
        pgpass = private / "pgpass"
        fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"*:*:*:{SUPERUSER}:{_pgpass_escape(settings.secret('DB_PASSWORD'))}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSFILE=str(pgpass), PGHOST=settings.db_host, PGPORT=str(settings.get_int("DB_PORT")),
                   PGUSER=SUPERUSER, PGDATABASE=dbname or settings.get_str("DB_NAME"),
                   PGCONNECT_TIMEOUT="10", PGAPPNAME="llmobs-backup", TZ="UTC")
        yield env
    finally:
        shutil.rmtree(private, ignore_errors=True)
