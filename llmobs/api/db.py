"""The API's PostgreSQL pool and the three kinds of work it does.

Connections log in as the app login role and switch to the group role ``llmobs_app`` for the
session, so row-level security applies to everything the API does (see ``init-sql/0020``).
Sessions are read-only by default (``default_transaction_read_only``) and carry the statement
timeout, so a read is one statement in autocommit: one round trip, no BEGIN and no COMMIT.

* :meth:`Database.read` — scoped to one project by the session's ``llmobs.project_id``, which
  row-level security reads; it is set again only when the connection served another project.
  A read whose session the server ended (a restart, a password rotation, a switchover) runs
  again on a new connection, for up to READ_RETRY_WINDOW seconds (READ_MAX_ATTEMPTS at most):
  reads are idempotent;
* reads that may lag (``may_lag=True``: the trace list, search, ``/query``, metrics) go to the
  replicas when API_READ_FROM_REPLICA is on (profile `ha`: db-proxy's read port, DB_READ_PORT),
  and to the leader when no replica answers (see :meth:`Database.read`). Every other read (one
  span or trace by id, anything after a write) stays on the leader, so a caller sees its writes;
* :meth:`Database.write_spans` — inserting one project's spans with the collector's COPY, which
  PostgreSQL only allows to a role that bypasses row-level security: the login role, for the
  length of that transaction;
* :meth:`Database.control` — API keys and the audit log (tables without row-level security).

Both kinds of write open their transaction READ WRITE explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from llmobs.api.errors import ApiError
from llmobs.store.db import APP_GROUP_ROLE, connect_kwargs, first_line, raise_if_closed

if TYPE_CHECKING:
    import psycopg

    from llmobs.config import Settings

log = logging.getLogger("llmobs.api.db")

T = TypeVar("T")

#: Seconds a request waits for a pooled connection before it is answered with 503.
POOL_TIMEOUT = 5.0
#: Seconds the pool keeps retrying a failed connection attempt (with its growing back-off: 1 s,
#: 2 s, 4 s, ...) before giving up; the next request then tries again at once. Retrying for ever
#: left requests waiting up to the back-off's next attempt (8 s, 16 s) after PostgreSQL was back.
RECONNECT_TIMEOUT = 1.0

#: Seconds, and attempts at most, a read whose session the server ended keeps running again on
#: new connections: a switchover or failover (profile `ha`) ends every session of the old
#: leader, and db-proxy routes to the new one a second or two later. Reads are idempotent; the
#: cap on attempts keeps a read that itself crashes the server from doing it again and again.
READ_RETRY_WINDOW = 5.0
READ_MAX_ATTEMPTS = 4
READ_RETRY_PAUSE = 0.2
#: Seconds a read that may lag waits for a replica connection before it goes to the leader, and
#: seconds the leader then serves such reads before the replicas are tried again.
REPLICA_TIMEOUT = 1.0
REPLICA_RETRY_AFTER = 5.0

_SCOPE_SQL = "SELECT set_config('llmobs.project_id', %s, false)"
_READ_WRITE_SQL = "SET TRANSACTION READ WRITE"
#: SQLSTATEs of a session the server ended: admin_shutdown (restart, pg_terminate_backend) and
#: crash_shutdown.
_SESSION_ENDED = frozenset({"57P01", "57P02"})
#: SQLSTATEs a hot standby answers when replay cancels a read (conflict with recovery); the
#: leader answers it instead.
_REPLICA_CONFLICT = frozenset({"40001"})


async def check_alive(conn: psycopg.AsyncConnection) -> None:
    """The pool's check before it hands out a connection, without a round trip
    (``raise_if_closed``): a connection the server closed is replaced before a request gets it."""
    raise_if_closed(conn)


class SessionEnded(Exception):
    """The server ended a read's session (a restart, ``pg_terminate_backend``); reads are
    idempotent, so the read can run again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplicaConflict(Exception):
    """A hot standby cancelled a read (replay conflicted with it); the leader can run it."""


class Database:
    def __init__(self, settings: Settings) -> None:
        self.statement_timeout_ms = settings.get_int("API_QUERY_TIMEOUT_MS")
        self.max_size = settings.get_int("DB_POOL_SIZE")
        # A project's reads share a few of the pool's connections, never all of them: one
        # project's slow reads cannot starve another's.
        self.reads_per_project = max(1, min(settings.get_int("API_MAX_READS_PER_PROJECT"), self.max_size - 1))
        self._project_slots: dict[int, asyncio.Semaphore] = {}
        self.connect_kwargs = {**connect_kwargs(settings, "app"), "application_name": "llmobs-api"}
        self._pool: AsyncConnectionPool | None = None
        #: reads that may lag go to the replicas (db-proxy's read port) when set
        self.replica_kwargs = (
            {**self.connect_kwargs, "port": settings.get_int("DB_READ_PORT"), "application_name": "llmobs-api-replica"}
            if settings.get_bool("API_READ_FROM_REPLICA")
            else None
        )
        self._replica_pool: AsyncConnectionPool | None = None
        #: loop time until which reads that may lag go to the leader (no replica answered)
        self._replica_down_until = 0.0
        # The project each pooled connection's session is scoped to; absent: none (yet).
        self._scopes: weakref.WeakKeyDictionary[psycopg.AsyncConnection, int] = weakref.WeakKeyDictionary()

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("the database pool is not open (the app was not started)")
        return self._pool

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        import orjson
        from psycopg import sql
        from psycopg.types.json import set_json_loads

        set_json_loads(orjson.loads, conn)
        await conn.set_autocommit(True)
        # JIT compiles for seconds on plans this API runs in milliseconds (a trace list sorted by
        # cost: 0.17 s without, 2 s with): never worth it for interactive queries.
        await conn.execute(
            sql.SQL(
                "SET ROLE {}; SET jit = off; SET default_transaction_read_only = on; SET statement_timeout = {}"
            ).format(sql.Identifier(APP_GROUP_ROLE), sql.Literal(self.statement_timeout_ms))
        )

    async def open(self) -> None:
        """A new pool (one per start of the app), and one for the replicas with
        API_READ_FROM_REPLICA. Neither waits for PostgreSQL: the API starts, and reports not
        ready, while the database is still down."""
        self._pool = await self._open_pool(self.connect_kwargs, POOL_TIMEOUT, "llmobs-api")
        if self.replica_kwargs is not None:
            self._replica_pool = await self._open_pool(self.replica_kwargs, REPLICA_TIMEOUT, "llmobs-api-replica")

    async def _open_pool(self, kwargs: dict[str, object], timeout: float, name: str) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            kwargs=kwargs,
            min_size=1,
            max_size=self.max_size,
            open=False,
            configure=self._configure,
            check=check_alive,
            timeout=timeout,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name=name,
        )
        await pool.open(wait=False)
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._replica_pool is not None:
            await self._replica_pool.close()
            self._replica_pool = None

    @asynccontextmanager
    async def _project_slot(self, project_id: int) -> AsyncIterator[None]:
        """One of the API_MAX_READS_PER_PROJECT read slots of ``project_id``; ApiError 429 when
        none is free within POOL_TIMEOUT."""
        slots = self._project_slots.get(project_id)
        if slots is None:
            slots = self._project_slots[project_id] = asyncio.Semaphore(self.reads_per_project)
        try:
            async with asyncio.timeout(POOL_TIMEOUT):
                await slots.acquire()
        except TimeoutError:
            raise ApiError(
                429,
                "project_busy",
                f"this project has {self.reads_per_project} reads in progress already (API_MAX_READS_PER_PROJECT); "
                "retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        try:
            yield
        finally:
            slots.release()

    async def read(
        self, project_id: int, work: Callable[[psycopg.AsyncConnection], Awaitable[T]], *, may_lag: bool = False
    ) -> T:
        """``work(conn)`` on a connection in autocommit, read-only, that sees only ``project_id``'s
        rows, within one of the project's read slots (ApiError 429 ``project_busy`` when they stay
        taken).

        ``may_lag``: the read may miss the latest commits (lists, search, aggregates; never a read
        that must see the caller's own writes). With API_READ_FROM_REPLICA on it runs on a replica;
        when none gives a connection within REPLICA_TIMEOUT, or the replica ends the session or
        cancels the read (a switchover, a conflict with replay), it runs on the leader, and so do
        such reads for the next REPLICA_RETRY_AFTER seconds."""
        async with self._project_slot(project_id):
            if may_lag and self._replica_pool is not None:
                loop = asyncio.get_running_loop()
                if loop.time() >= self._replica_down_until:
                    try:
                        return await self._read_once(self._replica_pool, project_id, work)
                    except (PoolTimeout, SessionEnded, ReplicaConflict) as exc:
                        log.info("no replica served a read (%s); the leader serves such reads for now", exc)
                        self._replica_down_until = loop.time() + REPLICA_RETRY_AFTER
                        await self._replica_pool.check()
            return await self._read(project_id, work)

    async def _read(self, project_id: int, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """The read, run again on a new connection while its session keeps being ended, for up to
        READ_RETRY_WINDOW seconds and READ_MAX_ATTEMPTS attempts; then the last connection error
        (the API answers 503). A read that got no connection within POOL_TIMEOUT waits once more
        (a new connection attempt): a switchover on a loaded host can leave db-proxy without a
        leader for longer than that. So while the database is down a read answers 503 after
        twice POOL_TIMEOUT."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        attempts = 0
        waited_for_pool = False
        while True:
            attempts += 1
            try:
                return await self._read_once(self.pool, project_id, work)
            except PoolTimeout:
                if waited_for_pool:
                    raise
                waited_for_pool = True
                log.info("no database connection within %.0f s; waiting once more", POOL_TIMEOUT)
                continue
            except SessionEnded as ended:
                if deadline is None:
                    # Whatever ended this session (a restart, a rotation, a switchover) has likely
                    # ended the other idle ones too: check them all (one round trip each), then
                    # run the read again at once.
                    log.info("a read lost its session (%s); checking the pool and running it again", ended.reason)
                    deadline = loop.time() + READ_RETRY_WINDOW
                elif loop.time() >= deadline or attempts >= READ_MAX_ATTEMPTS:
                    cause = ended.__cause__
                    raise cause if isinstance(cause, Exception) else ended from None
                else:
                    # The server is still going away (a leader being demoted): give the new one,
                    # and db-proxy's next health check, a moment.
                    await asyncio.sleep(READ_RETRY_PAUSE)
            await self.pool.check()

    async def _read_once(
        self, pool: AsyncConnectionPool, project_id: int, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]
    ) -> T:
        from psycopg import OperationalError

        async with pool.connection() as conn:
            try:
                if self._scopes.get(conn) != project_id:
                    # Forgotten first: if setting it fails, the next read sets it again.
                    self._scopes.pop(conn, None)
                    await conn.execute(_SCOPE_SQL, (str(project_id),))
                    self._scopes[conn] = project_id
                return await work(conn)
            except OperationalError as exc:
                if conn.broken or exc.sqlstate in _SESSION_ENDED:
                    raise SessionEnded(type(exc).__name__) from exc  # the pool drops the connection
                if pool is self._replica_pool and exc.sqlstate in _REPLICA_CONFLICT:
                    raise ReplicaConflict(exc.sqlstate or "") from exc
                raise

    @asynccontextmanager
    async def write_spans(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction as the login role (which bypasses row-level security: COPY needs that).
        Only rows whose project the caller has checked may be written in it."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(f"{_READ_WRITE_SQL}; SET LOCAL ROLE NONE")
            yield conn

    @asynccontextmanager
    async def write(self, project_id: int) -> AsyncIterator[psycopg.AsyncConnection]:
        """A read-write transaction as the group role, scoped to ``project_id`` for its length only
        (row-level security checks every row written; the session's scope is left as it was)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_READ_WRITE_SQL)
            await conn.execute("SELECT set_config('llmobs.project_id', %s, true)", (str(project_id),))
            yield conn

    @asynccontextmanager
    async def control(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A read-write transaction (API keys, the audit log)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_READ_WRITE_SQL)
            yield conn

    async def ping(self, timeout: float = 2.0) -> tuple[bool, str]:
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:  # any failure is "not reachable", described
            return False, first_line(exc)
        return True, "ok"
