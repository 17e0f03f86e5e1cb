"""API key authentication for the receivers, with a short bounded cache.

A lookup is a database query, too slow for every request. Answers are cached: a valid key for
``COLLECTOR_AUTH_CACHE_SECONDS`` (so a revoked key keeps working for up to that long on each
collector process), an unknown key for at most 5 s (so a key created a moment ago starts working
quickly, and a flood of bad tokens costs one query per token per 5 s). Concurrent requests with
the same uncached token share one lookup. A key that is revoked (or otherwise changed) is
forgotten at once when PostgreSQL announces it (:mod:`llmobs.store.key_events`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from llmobs.store.apikeys import ApiKey

NEGATIVE_TTL = 5.0
MAX_ENTRIES = 10_000


class KeyLookupFailed(Exception):
    """The database could not be asked (the request should be retried)."""


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyCache:
    def __init__(self, lookup: Callable[[str], ApiKey | None], *, ttl: float) -> None:
        """``lookup`` is blocking (it runs in a thread) and raises on database errors."""
        self._lookup = lookup
        self._ttl = ttl
        self._negative_ttl = min(NEGATIVE_TTL, ttl)
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._inflight: dict[str, asyncio.Future[ApiKey | None]] = {}
        # Bumped by every forget: a lookup that was under way meanwhile may have read the key as
        # it was before the change, and its answer is not cached.
        self._generation = 0

    def forget(self, key_id: str, key_hash: str) -> None:
        """Drop the cached answer for the key whose token hashes to ``key_hash`` (what the
        ``api_keys`` table stores: the sha256 the cache is keyed by)."""
        self._generation += 1
        self._entries.pop(key_hash, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def authenticate(self, token: str) -> ApiKey | None:
        """The active key for ``token``, or None; KeyLookupFailed when the database cannot answer."""
        digest = hashlib.sha256(token.encode()).hexdigest()  # the cache never holds tokens in clear
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > now:
            key = entry[1]
            return key if key is None or key.active else None
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            generation = self._generation
            try:
                key = await asyncio.to_thread(self._lookup, token)
            except Exception as exc:
                error = KeyLookupFailed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                future.set_exception(error)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
                raise error from None
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {d: e for d, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            if generation == self._generation:
                self._entries[digest] = (now + (self._ttl if key is not None else self._negative_ttl), key)
            future.set_result(key)
            return key
        finally:
            del self._inflight[digest]
