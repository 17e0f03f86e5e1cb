"""Running PostgreSQL's client tools (pg_dump, pg_basebackup, ...) as the superuser, and the
facts about the server that a manifest records.

The password travels in a PGPASSFILE of mode 0600 in a private temporary directory, removed
afterwards: never in argv (visible in ``ps``) and never in a logged connection string.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs.backup.job_env import in_job
from llmobs.errors import LlmobsError
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


def scalar(conn: psycopg.Connection, sql: str) -> Any:
    """The first column of the first row of ``sql``; raises LlmobsError when it returns no row."""
    row = conn.execute(sql).fetchone()
    if row is None:
        raise LlmobsError(f"the server returned no row for: {sql}")
    return row[0]


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
    if scalar(conn, "SELECT to_regclass('llmobs_schema_migrations') IS NOT NULL"):
        schema_version = scalar(conn, "SELECT max(version) FROM llmobs_schema_migrations")
    return ServerFacts(
        version=row[0].split()[0],
        major=row[1],
        system_identifier=row[2],
        wal_segment_size=row[3],
        archive_mode=row[4],
        schema_version=schema_version,
        timescaledb=row[5],
        timeline=row[6],
    )


def binaries_for(settings: Settings, major: int | None) -> PgBinaries:
    """The directory of PostgreSQL's client programs (pg_basebackup, pg_dump, pg_restore,
    pg_verifybackup, and pg_waldump and pg_controldata, which the app image copies from the
    server package) of the server's major version (the newest without one): pg_dump and
    pg_basebackup refuse newer servers, and pg_waldump reads its own major's WAL only.

    PG_BIN_DIR if set, else Debian's /usr/lib/postgresql/N/bin (the app image has the same
    layout), else where pg_dump is on PATH. The server binaries are not needed."""
    configured = settings.get_str("PG_BIN_DIR")
    if configured:
        candidates = [Path(configured)]
    else:
        candidates = sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), key=str)
        on_path = shutil.which("pg_dump")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    found = sorted({(m, c) for c in candidates if (m := _tools_major(c)) is not None}, reverse=True)
    if not found:
        raise LlmobsError(
            "PostgreSQL's client programs (pg_dump, pg_basebackup) not found",
            hint="install them (Debian: `apt-get install postgresql-client`) or set PG_BIN_DIR",
        )
    for found_major, bin_dir in found:
        if major is None or found_major == major:
            return PgBinaries(bin_dir, found_major)
    have = ", ".join(str(m) for m, _ in found)
    raise LlmobsError(
        f"the server is PostgreSQL {major}, but the client programs here are PostgreSQL {have}",
        hint=(
            f"use an app image built for it: `docker build --build-arg PG_MAJOR={major}` (LLMOBS_IMAGE_APP)"
            if in_job()
            else f"install postgresql-client-{major} (and postgresql-{major} for pg_waldump), or "
            "set PG_BIN_DIR to its bin directory"
        ),
    )


@functools.cache
def _tools_major(bin_dir: Path) -> int | None:
    """The major version of the pg_dump in ``bin_dir`` ("pg_dump (PostgreSQL) 16.3 (Debian ...)")."""
    if not (bin_dir / "pg_dump").is_file() or not (bin_dir / "pg_basebackup").is_file():
        return None
    out = subprocess.run([str(bin_dir / "pg_dump"), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"\)\s+(\d+)", out)
    return int(match[1]) if match else None


def admin_connection(settings: Settings, dbname: str | None = None) -> psycopg.Connection:
    return connect(settings, "admin", dbname=dbname, autocommit=True, connect_timeout=10)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def client_env(settings: Settings, *, dbname: str | None = None, port: int | None = None) -> Iterator[dict[str, str]]:
    """Environment for a client tool connecting as the superuser (to ``port``, default DB_PORT);
    the password in a 0600 file."""
    private = Path(tempfile.mkdtemp(prefix="llmobs-pg-"))
    try:
        pgpass = private / "pgpass"
        fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"*:*:*:{SUPERUSER}:{_pgpass_escape(settings.secret('DB_PASSWORD'))}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGPASSFILE=str(pgpass),
            PGHOST=settings.db_host,
            PGPORT=str(port or settings.get_int("DB_PORT")),
            PGUSER=SUPERUSER,
            PGDATABASE=dbname or settings.get_str("DB_NAME"),
            PGCONNECT_TIMEOUT="10",
            PGAPPNAME="llmobs-backup",
            TZ="UTC",
        )
        yield env
    finally:
        shutil.rmtree(private, ignore_errors=True)
