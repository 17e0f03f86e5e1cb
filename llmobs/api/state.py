"""What every request handler of one API process shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmobs.api.auth import Authenticator
    from llmobs.api.cache import ResultCache
    from llmobs.api.db import Database
    from llmobs.api.ingest import SpanIngest
    from llmobs.api.ratelimit import RateLimiter
    from llmobs.api.redis_link import RedisLink
    from llmobs.auth_failures import FailedAuthLimiter
    from llmobs.config import Settings


@dataclass
class ApiState:
    settings: Settings
    db: Database
    redis: RedisLink
    auth: Authenticator
    limiter: RateLimiter
    cache: ResultCache
    ingest: SpanIngest
    auth_failures: FailedAuthLimiter
