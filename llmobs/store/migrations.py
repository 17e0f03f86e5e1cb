"""Versioned schema migrations: ``init-sql/NNNN_name.sql`` files applied once each, in order.

Each migration runs in its own transaction together with the row that records it, so a failing
migration leaves the schema exactly as it was. A session advisory lock keeps two migrators (two
`llmobs up` at once, or a scaled service) from interleaving.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.errors import LlmobsError
from llmobs.resources import resource_dir
from llmobs.store.db import first_line

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "llmobs_schema_migrations"
_LOCK_KEY = 0x6C6D6F6273  # "lmobs"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime
    execution_ms: int


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[AppliedMigration]
    pending: list[Migration]
    #: applied migrations whose file changed since (a warning, not an error)
    modified: list[int]

    @property
    def schema_version(self) -> int:
        return max((m.version for m in self.applied), default=0)


class MigrationError(LlmobsError):
    pass


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or resource_dir("init-sql")
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"two migration files share a version in {directory}")
    return found


def ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            version       integer PRIMARY KEY,
            name          text NOT NULL,
            checksum      text NOT NULL,
            applied_at    timestamptz NOT NULL DEFAULT now(),
            execution_ms  integer NOT NULL
        )""")


def applied(conn: psycopg.Connection) -> list[AppliedMigration]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        f"SELECT version, name, checksum, applied_at, execution_ms FROM {MIGRATIONS_TABLE} ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def status(conn: psycopg.Connection, migrations: list[Migration] | None = None) -> MigrationStatus:
    migrations = discover() if migrations is None else migrations
    done = applied(conn)
    done_versions = {m.version: m for m in done}
    pending = [m for m in migrations if m.version not in done_versions]
    modified = [
        m.version for m in migrations if m.version in done_versions and done_versions[m.version].checksum != m.checksum
    ]
    return MigrationStatus(done, pending, modified)


def migrate(
    conn: psycopg.Connection,
    migrations: list[Migration] | None = None,
    on_apply: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Apply every pending migration in version order; return those applied.

    ``conn`` must be an autocommit connection of the superuser: each migration opens its own
    transaction.
    """
    import psycopg

    migrations = discover() if migrations is None else migrations
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        ensure_table(conn)
        todo = status(conn, migrations).pending
        for migration in todo:
            if on_apply:
                on_apply(migration)
            log.info("applying migration %04d_%s", migration.version, migration.name)
            started = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # bytes: no client-side placeholder parsing
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, execution_ms) "
                        "VALUES (%s, %s, %s, %s)",
                        (
                            migration.version,
                            migration.name,
                            migration.checksum,
                            int((time.monotonic() - started) * 1000),
                        ),
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.path.name} failed and was rolled back: {first_line(exc)}"
                ) from None
        return todo
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
