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
from collections.abc import Callable

from llmobs.store.apikeys import ApiKey
from llmobs.store.key_cache import KeyCache

#: Seconds an unknown token stays unknown.
NEGATIVE_TTL = 5.0


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
    """The collector's view of API keys: tokens looked up with a blocking query (in a thread)."""

    def __init__(self, lookup: Callable[[str], ApiKey | None], *, ttl: float) -> None:
        """``lookup`` is blocking and raises on database errors."""
        self._lookup = lookup
        self._cache = KeyCache(ttl=ttl, negative_ttl=NEGATIVE_TTL)

    def forget(self, key_id: str, key_hash: str) -> None:
        """Drop the cached answer for the key whose token hashes to ``key_hash`` (what the
        ``api_keys`` table stores: the sha256 the cache is keyed by)."""
        self._cache.forget(key_hash)

    def forget_all(self) -> None:
        self._cache.forget_all()

    async def authenticate(self, token: str) -> ApiKey | None:
        """The active key for ``token``, or None; KeyLookupFailed when the database cannot answer."""
        digest = hashlib.sha256(token.encode()).hexdigest()  # the cache never holds tokens in clear
        try:
            key = await self._cache.get(digest, lambda: asyncio.to_thread(self._lookup, token))
        except Exception as exc:
            raise KeyLookupFailed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return key if key is not None and key.active else None
