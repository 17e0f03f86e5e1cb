"""Concurrent asks for the same thing share one answer.

When many requests need the same uncached value at once (an API key after its cache entry
expired, a metrics result dashboards refresh together), one of them computes it and the others
wait for that result instead of each running the query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """``work()``'s result, or that of the ``work`` for ``key`` already under way. Its error,
        too, reaches every caller waiting for it; the next call after that runs ``work`` again."""
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(work())
            running.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: a caller that goes away does not cancel the others' result.
        return await asyncio.shield(running)

    def _finished(self, key: K, done: asyncio.Future[V]) -> None:
        self._running.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have gone, and the error was theirs
