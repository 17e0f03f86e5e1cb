"""The API's PostgreSQL pool and the three kinds of transaction it runs.

Connections log in as the app login role and switch to the group role ``llmobs_app`` for the
session, so row-level security applies to everything the API does (see ``init-sql/0020``):

* :meth:`Database.read` — read-only, scoped to one project, with a statement timeout;
* :meth:`Database.write_spans` — inserting one project's spans with the collector's COPY, which
  PostgreSQL only allows to a role that bypasses row-level security: the login role, for the
  length of that transaction;
* :meth:`Database.control` — API keys and the audit log (tables without row-level security).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from llmobs.store.db import APP_GROUP_ROLE, connect_kwargs

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

#: Seconds a request waits for a pooled connection before it is answered with 503.
POOL_TIMEOUT = 5.0

_SCOPE_SQL = ("SELECT set_config('llmobs.project_id', %s, true), set_config('transaction_read_only', 'on', true),"
              " set_config('statement_timeout', %s, true)")


async def _configure(conn: psycopg.AsyncConnection) -> None:
    import orjson
    from psycopg import sql
    from psycopg.types.json import set_json_loads

    set_json_loads(orjson.loads, conn)
    await conn.set_autocommit(True)
    await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_GROUP_ROLE)))
    # JIT compiles for seconds on plans this API runs in milliseconds (a trace list sorted by cost:
    # 0.17 s without, 2 s with): never worth it for interactive queries.
    await conn.execute("SET jit = off")


class Database:
    def __init__(self, settings: Settings) -> None:
        self.statement_timeout_ms = settings.get_int("API_QUERY_TIMEOUT_MS")
        self.max_size = settings.get_int("DB_POOL_SIZE")
        self.connect_kwargs = {**connect_kwargs(settings, "app"), "application_name": "llmobs-api"}
        self._pool: AsyncConnectionPool | None = None

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("the database pool is not open (the app was not started)")
        return self._pool

    async def open(self) -> None:
        """A new pool (one per start of the app). It does not wait for PostgreSQL: the API starts,
        and reports not ready, while the database is still down."""
        self._pool = AsyncConnectionPool(
            kwargs=self.connect_kwargs, min_size=1, max_size=self.max_size, open=False, configure=_configure,
            check=AsyncConnectionPool.check_connection, timeout=POOL_TIMEOUT, reconnect_timeout=float("inf"),
            name="llmobs-api")
        await self._pool.open(wait=False)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def read(self, project_id: int) -> AsyncIterator[psycopg.AsyncConnection]:
        # Pipeline mode: BEGIN, the scope and the first query go out in one round trip.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            await conn.execute(_SCOPE_SQL, (str(project_id), str(self.statement_timeout_ms)))
            yield conn

    @asynccontextmanager
    async def write_spans(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction as the login role (which bypasses row-level security: COPY needs that).
        Only rows whose project the caller has checked may be written in it."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL ROLE NONE")
            yield conn

    @asynccontextmanager
    async def control(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def ping(self, timeout: float = 2.0) -> tuple[bool, str]:
        from llmobs.store.db import first_line

        try:
            async with self.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:  # any failure is "not reachable", described
            return False, first_line(exc)
        return True, "ok"
