"""The API's connection to Redis, which it can live without.

Redis holds rate-limit buckets, the result cache and the pub/sub feed of new traces. When it is
unreachable, callers get :class:`RedisUnavailable` at once: after a failure, Redis is skipped for
:data:`RETRY_AFTER` seconds (so requests do not each wait for a timeout), then tried again, which
is how the API recovers by itself when Redis returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from llmobs.config import Settings

log = logging.getLogger("llmobs.api.redis")

T = TypeVar("T")

#: Seconds Redis is skipped after a failed call.
RETRY_AFTER = 2.0
#: Socket timeouts: Redis answers in well under a millisecond on a healthy network.
TIMEOUT = 0.5


class RedisUnavailable(Exception):
    pass


def client_for(settings: Settings, *, timeout: float | None = TIMEOUT) -> aioredis.Redis:
    """A client for the stack's Redis. One retry on a fresh connection covers a connection the
    server closed while it sat in the pool (a Redis restart)."""
    return aioredis.Redis(
        host=settings.redis_host,
        port=settings.get_int("REDIS_PORT"),
        username=settings.get_str("REDIS_USER"),
        password=settings.secret("REDIS_PASSWORD"),
        socket_timeout=timeout,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 1),
        client_name="llmobs-api",
    )


class RedisLink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = client_for(settings)
        self._skip_until = 0.0
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while Redis is being skipped after a failure."""
        return time.monotonic() >= self._skip_until

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``op(client)``, or RedisUnavailable when Redis is (or was just seen) unreachable."""
        if not self.healthy:
            raise RedisUnavailable(self.last_error or "redis unavailable")
        try:
            result = await op(self.client)
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            raise RedisUnavailable(self.last_error or "redis unavailable") from exc
        if self.last_error is not None:
            log.info("redis is reachable again")
            self.last_error = None
        return result

    def mark_down(self, exc: BaseException) -> None:
        if self.last_error is None:
            log.warning("redis unreachable, continuing without it: %s", type(exc).__name__)
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        self._skip_until = time.monotonic() + RETRY_AFTER

    async def ping(self) -> tuple[bool, str]:
        """(reachable, detail) — always asks Redis, even while it is being skipped."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return False, self.last_error or "unreachable"
        self._skip_until = 0.0
        self.last_error = None
        return True, "ok"

    async def close(self) -> None:
        await self.client.aclose()
