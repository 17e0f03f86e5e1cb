"""Cache of query and metrics results in Redis, for ``API_CACHE_TTL_SECONDS``.

Entries are the exact JSON bodies sent to clients. A key is the database, the project id, the kind
of result and a hash of the canonical request, so two projects (or two stacks sharing a Redis)
never share an entry. A cache that cannot
reach Redis is a cache that misses: the result is computed from PostgreSQL.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from llmobs.api import prom
from llmobs.api.redis_link import RedisLink, RedisUnavailable


class ResultCache:
    def __init__(self, link: RedisLink, ttl_seconds: int, namespace: str) -> None:
        self.link = link
        self.ttl = ttl_seconds
        self.namespace = namespace

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def key(self, project_id: int, kind: str, request: Any) -> str:
        digest = hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
        return f"llmobs:cache:{self.namespace}:{project_id}:{kind}:{digest[:40]}"

    async def get(self, key: str) -> bytes | None:
        if not self.enabled:
            return None
        try:
            value = await self.link.run(lambda c: c.get(key))
        except RedisUnavailable:
            prom.CACHE.labels("error").inc()
            return None
        prom.CACHE.labels("hit" if value is not None else "miss").inc()
        return value

    async def put(self, key: str, body: bytes) -> None:
        if not self.enabled:
            return
        try:
            await self.link.run(lambda c: c.set(key, body, ex=self.ttl))
        except RedisUnavailable:
            prom.CACHE.labels("error").inc()
