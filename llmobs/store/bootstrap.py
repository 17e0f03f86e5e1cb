"""Bring a running PostgreSQL to the state the stack needs: database, schema, roles, keys.

Every step is idempotent; `llmobs up` and `llmobs db migrate` run all of them each time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from llmobs.errors import ConfigError
from llmobs.store import apikeys, migrations
from llmobs.store.db import APP_GROUP_ROLE, APP_LOGIN_ROLES, READONLY_ROLE, connect
from llmobs.store.maintain import prepare_partitions

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "default"


@dataclass
class BootstrapResult:
    created_database: bool = False
    applied: list[str] = field(default_factory=list)
    schema_version: int = 0


def ensure_database(settings: Settings) -> bool:
    """Create ``DB_NAME`` if it does not exist; True when it was created."""
    from psycopg import sql

    name = settings.get_str("DB_NAME")
    with connect(settings, "admin", dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        log.info("creating database %s", name)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def set_role_password(
    conn: psycopg.Connection, role: str, password: str, *, login: bool = True, member_of: str | None = None
) -> None:
    """Create or update a login role. The password is sent as a SCRAM verifier computed here,
    so the clear text never reaches the server (nor its log, should the statement fail)."""
    from psycopg import sql

    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(
        sql.SQL("{} ROLE {} WITH {} PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN"), sql.Literal(verifier)
        )
    )
    if member_of:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), sql.Identifier(role)))


def ensure_roles(conn: psycopg.Connection, settings: Settings) -> None:
    """Login roles with the passwords from the settings: the active app role and readonly.

    Only the active app login role (``DB_APP_USER``) is touched: during a rotation the other one
    belongs to `llmobs secrets rotate`.
    """
    app_user = settings.get_str("DB_APP_USER")
    if app_user not in APP_LOGIN_ROLES:
        raise ConfigError("DB_APP_USER", f"{app_user!r} is not one of: {', '.join(APP_LOGIN_ROLES)}")
    set_role_password(conn, app_user, settings.secret("DB_APP_PASSWORD"), member_of=APP_GROUP_ROLE)
    set_role_password(conn, READONLY_ROLE, settings.secret("DB_READONLY_PASSWORD"))


def ensure_default_keys(conn: psycopg.Connection, settings: Settings) -> None:
    """The default project with its admin and ingest keys from the settings."""
    apikeys.ensure_project(conn, DEFAULT_PROJECT)
    default_keys: tuple[tuple[str, apikeys.Role], ...] = (
        ("LLMOBS_ADMIN_API_KEY", "admin"),
        ("LLMOBS_INGEST_API_KEY", "writer"),
    )
    for name, role in default_keys:
        if settings.has_secret(name):
            apikeys.store_key(
                conn,
                settings.secret(name),
                project=DEFAULT_PROJECT,
                role=role,
                name=name.removeprefix("LLMOBS_").removesuffix("_API_KEY").lower(),
            )


def bootstrap(
    settings: Settings, on_migration: Callable[[migrations.Migration], None] | None = None
) -> BootstrapResult:
    result = BootstrapResult(created_database=ensure_database(settings))
    with connect(settings, "admin", autocommit=True) as conn:
        applied = migrations.migrate(conn, on_apply=on_migration)
        result.applied = [f"{m.version:04d}_{m.name}" for m in applied]
        with conn.transaction():
            ensure_roles(conn, settings)
            ensure_default_keys(conn, settings)
        result.schema_version = migrations.status(conn).schema_version
        # Spans can be written at once: the partitions of the accepted window exist before the
        # first maintenance pass.
        prepare_partitions(conn, settings, datetime.now(UTC))
    return result
