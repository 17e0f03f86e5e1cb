"""Connections to PostgreSQL as the three roles of the stack.

Passwords are passed to libpq as keyword arguments, never inside a connection string, so they
cannot leak through a logged DSN or an exception message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from llmobs.errors import LlmobsError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from llmobs.config import Settings

DbRole = Literal["admin", "app", "readonly"]

SUPERUSER = "postgres"
READONLY_ROLE = "llmobs_readonly"
APP_GROUP_ROLE = "llmobs_app"
APP_LOGIN_ROLES = ("llmobs_app_a", "llmobs_app_b")


def connect_kwargs(
    settings: Settings, role: DbRole = "admin", *, dbname: str | None = None, connect_timeout: int = 5
) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` / a pool as ``role``."""
    user, secret = {
        "admin": (SUPERUSER, "DB_PASSWORD"),
        "app": (settings.get_str("DB_APP_USER"), "DB_APP_PASSWORD"),
        "readonly": (READONLY_ROLE, "DB_READONLY_PASSWORD"),
    }[role]
    return {
        "host": settings.db_host,
        "port": settings.get_int("DB_PORT"),
        "dbname": dbname or settings.get_str("DB_NAME"),
        "user": user,
        "password": settings.secret(secret),
        "connect_timeout": connect_timeout,
        "application_name": f"llmobs-{role}",
    }


def connect(
    settings: Settings,
    role: DbRole = "admin",
    *,
    dbname: str | None = None,
    autocommit: bool = False,
    connect_timeout: int = 5,
) -> psycopg.Connection:
    """A connection as ``role``; a clear LlmobsError when PostgreSQL cannot be reached."""
    import psycopg

    kwargs = connect_kwargs(settings, role, dbname=dbname, connect_timeout=connect_timeout)
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise LlmobsError(
            f"cannot connect to PostgreSQL at {kwargs['host']}:{kwargs['port']} as {kwargs['user']}: {first_line(exc)}",
            hint="is the stack up? (`llmobs status`)",
        ) from None


def make_pool(
    settings: Settings,
    role: DbRole = "app",
    *,
    min_size: int = 1,
    max_size: int | None = None,
    name: str = "llmobs",
    open: bool = True,
) -> ConnectionPool:
    """A psycopg pool as ``role`` that reconnects by itself after PostgreSQL restarts."""
    from psycopg_pool import ConnectionPool

    kwargs = connect_kwargs(settings, role)
    return ConnectionPool(
        kwargs=kwargs,
        min_size=min_size,
        max_size=max_size or settings.get_int("DB_POOL_SIZE"),
        name=name,
        open=open,
        check=ConnectionPool.check_connection,
        reconnect_timeout=float("inf"),
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
