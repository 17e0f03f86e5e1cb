"""Logical backups of the stack's database: ``pg_dump -Fc``, and restoring one beside the
current database before swapping names, so the current data stays until the restore is checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.manifest import Manifest
from llmobs.backup.pgclient import admin_connection, binaries_for, client_env, server_facts
from llmobs.backup.physical import describe_while_switching
from llmobs.proc import run

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.progress import Progress
    from llmobs.stack.postgres import PgBinaries

DUMP_FILE = "dump.pgdump"


def create_logical(settings: Settings, work: Path, backup_id: str, progress: Progress) -> Manifest:
    level = settings.get_int("BACKUP_COMPRESSION_LEVEL")
    database = settings.get_str("DB_NAME")
    with admin_connection(settings) as conn:
        facts = server_facts(conn)
        binaries = binaries_for(settings, facts.major)
        started = datetime.now(UTC)
        progress.step(f"pg_dump of database {database}")
        with client_env(settings) as env:
            run(
                [
                    binaries("pg_dump"),
                    "--format=custom",
                    f"--compress={level}",
                    "--no-password",
                    f"--file={work / DUMP_FILE}",
                    database,
                ],
                env=env,
            )
        finished = datetime.now(UTC)
        described = describe_while_switching(conn, work, progress)
    return Manifest(
        id=backup_id,
        type="logical",
        started_at=started,
        finished_at=finished,
        files=described,
        database=database,
        pg_version=facts.version,
        pg_major=facts.major,
        schema_version=facts.schema_version,
        system_identifier=facts.system_identifier,
        compression=f"gzip:{level}" if level else "none",
    )


def check_dump(dump: Path, binaries: PgBinaries) -> int:
    """``pg_restore --list``: the dump's table of contents is readable. Returns its entry count."""
    proc = run([binaries("pg_restore"), "--list", dump])
    return sum(1 for line in proc.stdout.decode(errors="replace").splitlines() if line and not line.startswith(";"))


def restore_dump(settings: Settings, dump: Path, database: str, binaries: PgBinaries) -> None:
    """Create ``database`` and load the dump into it (TimescaleDB's pre/post restore hooks when
    the extension is in the dump's target)."""
    from psycopg import sql

    with admin_connection(settings, dbname="postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    timescale = _timescale_available(settings, database)
    if timescale:
        with admin_connection(settings, dbname=database) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
    with client_env(settings, dbname=database) as env:
        run(
            [
                binaries("pg_restore"),
                "--exit-on-error",
                "--no-password",
                f"--dbname={database}",
                f"--jobs={settings.get_int('BACKUP_RESTORE_JOBS')}",
                dump,
            ],
            env=env,
        )
    if timescale:
        with admin_connection(settings, dbname=database) as conn:
            conn.execute("SELECT timescaledb_post_restore()")


def _timescale_available(settings: Settings, database: str) -> bool:
    with admin_connection(settings, dbname=database) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') "
            "AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
        ).fetchone()
    return bool(row and row[0])
