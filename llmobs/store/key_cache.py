"""An in-process cache of API key lookups, shared by the API and the collector.

A lookup is a database query, too slow for every request. An answer is trusted for ``ttl``
seconds (a missing key for ``negative_ttl``), concurrent lookups of one entry share one query,
and an entry is forgotten at once when PostgreSQL announces that its key changed
(:mod:`llmobs.store.key_events`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from llmobs.singleflight import SingleFlight
from llmobs.store.apikeys import ApiKey

#: Entries kept before the expired ones are dropped (and, if that is not enough, all of them).
MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, *, ttl: float, negative_ttl: float = 0.0) -> None:
        self.ttl = ttl
        self.negative_ttl = min(negative_ttl, ttl)
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._lookups: SingleFlight[str, ApiKey | None] = SingleFlight()
        # Bumped by every forget: a lookup under way meanwhile may have read the key as it was
        # before the change, and its answer is not cached.
        self._generation = 0

    def forget(self, entry: str) -> None:
        self._generation += 1
        self._entries.pop(entry, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def get(self, entry: str, lookup: Callable[[], Awaitable[ApiKey | None]]) -> ApiKey | None:
        """The key cached under ``entry`` (a token's sha256, or a key id), else ``lookup()``'s
        answer, cached. Whether the key is still active is the caller's question: it may have
        expired since."""
        cached = self._entries.get(entry)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return await self._lookups.run(entry, lambda: self._look_up(entry, lookup))

    async def _look_up(self, entry: str, lookup: Callable[[], Awaitable[ApiKey | None]]) -> ApiKey | None:
        generation = self._generation
        key = await lookup()
        ttl = self.ttl if key is not None else self.negative_ttl
        if ttl > 0 and generation == self._generation:
            now = time.monotonic()
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {e: v for e, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[entry] = (now + ttl, key)
        return key
