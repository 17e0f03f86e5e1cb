"""Who is calling: an API key or a JWT issued for one, resolved to a project and a role.

``Authorization: Bearer <token>`` carries either an API key (``llmobs_<id>_<secret>``) or a JWT
from ``POST /api/v1/auth/token``. A JWT is only as good as the key it was issued for: revoking
or expiring the key ends its tokens too. A process trusts a key it checked for
``API_AUTH_CACHE_SECONDS`` before it looks again, which keeps the database off the hot path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmobs.api import prom
from llmobs.api.errors import ApiError
from llmobs.api.tokens import TokenError, TokenSigner
from llmobs.store import apikeys
from llmobs.store.key_cache import KeyCache

if TYPE_CHECKING:
    from llmobs.api.db import Database
    from llmobs.config import Settings
    from llmobs.store.apikeys import ApiKey, Role


@dataclass(frozen=True)
class Principal:
    key_id: str
    project_id: int
    project: str
    role: Role
    via: Literal["api_key", "jwt"]

    def allows(self, role: Role) -> bool:
        return apikeys.ROLE_RANK[self.role] >= apikeys.ROLE_RANK[role]

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_id}"


def unauthorized(message: str) -> ApiError:
    prom.AUTH_FAILURES.inc()
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="llmobs"'})


class Authenticator:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.signer = TokenSigner.from_settings(settings)
        cache_seconds = settings.get_int("API_AUTH_CACHE_SECONDS")
        self._by_token = KeyCache(ttl=cache_seconds)  # by the token's sha256
        self._by_id = KeyCache(ttl=cache_seconds, negative_ttl=cache_seconds)  # for JWTs

    def forget(self, key_id: str, key_hash: str) -> None:
        """Drop what the caches hold of a key that changed (``llmobs.store.key_events``)."""
        self._by_token.forget(key_hash)
        self._by_id.forget(key_id)

    def forget_all(self) -> None:
        self._by_token.forget_all()
        self._by_id.forget_all()

    def signed_here(self, token: str) -> bool:
        """Whether ``token`` is a JWT signed with one of this API's keys and not expired: checked
        without the database, so it cannot be a guess (the failed-authentication limit lets it
        through). Its key is still checked by :meth:`principal`."""
        if token.count(".") != 2:
            return False
        try:
            self.signer.verify(token)
        except TokenError:
            return False
        return True

    async def principal(self, token: str | None) -> Principal:
        if not token:
            raise unauthorized("missing credentials: send Authorization: Bearer <API key or token>")
        if token.startswith("llmobs_"):
            key = await self._api_key(token)
            if key is None:
                raise unauthorized("invalid, expired or revoked API key")
            return Principal(key.key_id, key.project_id, key.project, key.role, "api_key")
        if token.count(".") == 2:
            try:
                claims = self.signer.verify(token)
            except TokenError as exc:
                raise unauthorized(str(exc)) from None
            key = await self._key_by_id(claims.key_id)
            if key is None or not key.active or key.project_id != claims.project_id:
                raise unauthorized("the API key this token was issued for is revoked or expired")
            # The token never grants more than its key has now.
            role = claims.role if apikeys.ROLE_RANK.get(claims.role, -1) <= apikeys.ROLE_RANK[key.role] else key.role
            if role not in apikeys.ROLES:
                raise unauthorized("token is not valid")
            return Principal(key.key_id, key.project_id, key.project, role, "jwt")
        raise unauthorized("credentials are neither an API key nor a token")

    async def _api_key(self, token: str) -> ApiKey | None:
        async def lookup() -> ApiKey | None:
            async with self.db.control() as conn:
                return await apikeys.aauthenticate(conn, token)

        key = await self._by_token.get(hashlib.sha256(token.encode()).hexdigest(), lookup)
        return key if key is not None and key.active else None

    async def _key_by_id(self, key_id: str) -> ApiKey | None:
        async def lookup() -> ApiKey | None:
            async with self.db.control() as conn:
                return await apikeys.aget_key(conn, key_id)

        return await self._by_id.get(key_id, lookup)
