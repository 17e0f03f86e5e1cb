"""Per-key rate limits: a token bucket per API key, kept and updated atomically in Redis.

Each key may make ``API_RATE_LIMIT_PER_MINUTE`` requests a minute on average and up to
``API_RATE_LIMIT_BURST`` at once. The bucket lives in one Redis hash updated by a Lua script (so
concurrent requests on any number of API processes never race), timed by Redis' own clock.

When Redis is unreachable the limiter fails open (requests pass unlimited) or closed (503), as
``API_RATE_LIMIT_FAIL_OPEN`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmobs.api.redis_link import RedisLink, RedisUnavailable

if TYPE_CHECKING:
    from llmobs.config import Settings

# KEYS[1]: the bucket. ARGV: refill rate (tokens per second), capacity. Returns
# {allowed (0/1), tokens left, seconds until a token is available, seconds until full}.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
else
    wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(wait), tostring((capacity - tokens) / rate)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int = 0
    #: False when the decision was made without Redis (fail open or closed).
    checked: bool = True

    def headers(self) -> dict[str, str]:
        if not self.checked:
            return {}
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self, link: RedisLink, settings: Settings) -> None:
        self.link = link
        self.per_minute = settings.get_int("API_RATE_LIMIT_PER_MINUTE")
        self.burst = settings.get_int("API_RATE_LIMIT_BURST")
        self.fail_open = settings.get_bool("API_RATE_LIMIT_FAIL_OPEN")
        self._script = link.client.register_script(_TOKEN_BUCKET)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def check(self, key_id: str) -> Decision:
        """Take one token from the key's bucket."""
        rate = self.per_minute / 60.0
        try:
            allowed, tokens, wait, full = await self.link.run(
                lambda _client: self._script(keys=[f"llmobs:ratelimit:{key_id}"], args=[rate, self.burst])
            )
        except RedisUnavailable:
            return Decision(self.fail_open, self.per_minute, 0, 0, retry_after=5, checked=False)
        return Decision(
            bool(int(allowed)),
            self.per_minute,
            int(float(tokens)),
            math.ceil(float(full)),
            retry_after=max(1, math.ceil(float(wait))),
        )
