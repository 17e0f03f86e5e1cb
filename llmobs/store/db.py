"""Connections to PostgreSQL as the three roles of the stack.

Passwords are passed to libpq as keyword arguments, never inside a connection string, so they
cannot leak through a logged DSN or an exception message.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from llmobs.errors import LlmobsError

if TYPE_CHECKING:
    import psycopg

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


class ConnectionSource:
    """Connections as one role, made when asked and kept for reuse (up to ``keep`` idle ones),
    for a server's occasional blocking queries (the collector's key lookups, prices, counters).

    Unlike a pool, nothing reconnects in the background with a growing back-off: while
    PostgreSQL is down a query fails at once (connection refused) and the first one after it is
    back connects at once. An idle connection the server closed meanwhile (a restart) is
    noticed without a round trip (``raise_if_closed``) and replaced before use. Thread-safe."""

    def __init__(self, kwargs: dict[str, Any], *, keep: int = 2) -> None:
        import threading

        self._kwargs = kwargs
        self._keep = keep
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A connection whose transaction is committed on success and rolled back on error (as
        a pool's); ``timeout``: seconds to connect, when a new connection is needed."""
        import psycopg

        conn = self._reuse()
        if conn is None:
            timeout_kwargs = {"connect_timeout": max(1, round(timeout))} if timeout else {}
            conn = psycopg.connect(**{**self._kwargs, **timeout_kwargs})
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.close()  # whatever state it is in, it is not handed out again
            raise
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(conn)
                return
        conn.close()

    def _reuse(self) -> psycopg.Connection | None:
        import psycopg

        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            try:
                raise_if_closed(conn)
                return conn
            except psycopg.OperationalError:
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def raise_if_closed(conn: psycopg.Connection | psycopg.AsyncConnection) -> None:
    """Without a round trip, read whatever the server sent meanwhile: a server that restarted
    or ended the session (``pg_terminate_backend``) has closed the socket, and this raises
    OperationalError, so the connection is replaced before a query fails on it."""
    from psycopg import OperationalError
    from psycopg.pq import ConnStatus

    # An idle connection is sent nothing unless the server ends it: "terminating connection ..."
    # comes first, then the end of the stream, which a further read sees.
    for _ in range(3):
        conn.pgconn.consume_input()
        if conn.pgconn.status != ConnStatus.OK:
            raise OperationalError("the connection to PostgreSQL is closed")
        if not select.select([conn.pgconn.socket], [], [], 0)[0]:
            return
    raise OperationalError("PostgreSQL keeps sending on an idle connection")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
