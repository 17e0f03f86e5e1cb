"""JWT bearer tokens: HS256 over ``SECRET_KEY``, each naming its signing key in the ``kid`` header.

Tokens are issued only with the current key. After a rotation (``llmobs secrets rotate jwt``)
``SECRET_KEY_PREVIOUS`` holds the old key and ``SECRET_KEY_PREVIOUS_UNTIL`` the end of its grace
period: tokens whose ``kid`` is the old key's are accepted until then, so clients holding one
keep working while they fetch a new token.

During a rotation, ``SECRET_KEY_NEXT`` holds the key about to replace ``SECRET_KEY``: accepted,
never used for signing. Every api replica learns it before any replica signs with it, so a token
from an already switched replica is good on one that is not switched yet.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt

from llmobs.errors import ConfigError

if TYPE_CHECKING:
    from llmobs.config import Settings

ALGORITHM = "HS256"
ISSUER = "llmobs"


def kid_for(secret: str) -> str:
    """The key id of a signing secret: the first 8 hex digits of its SHA-256 (reveals nothing)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


class TokenError(Exception):
    """The token is not acceptable; the message says why (never with key material)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    kid: str


@dataclass(frozen=True)
class Claims:
    key_id: str
    project_id: int
    role: str
    expires_at: datetime


class TokenSigner:
    def __init__(
        self,
        current: str,
        *,
        previous: str | None = None,
        previous_until: datetime | None = None,
        next_key: str | None = None,
        ttl: timedelta = timedelta(hours=1),
    ) -> None:
        self._current = current
        self.kid = kid_for(current)
        self._previous = previous if previous and previous != current else None
        self.previous_kid = kid_for(self._previous) if self._previous else None
        self.previous_until = previous_until
        self._next = next_key if next_key and next_key != current else None
        self.next_kid = kid_for(self._next) if self._next else None
        self.ttl = ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenSigner:
        previous = settings.secret("SECRET_KEY_PREVIOUS") if settings.has_secret("SECRET_KEY_PREVIOUS") else None
        next_key = settings.secret("SECRET_KEY_NEXT") if settings.has_secret("SECRET_KEY_NEXT") else None
        until_text = settings.get_str("SECRET_KEY_PREVIOUS_UNTIL")
        until = None
        if until_text:
            try:
                until = datetime.fromisoformat(until_text.replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError("SECRET_KEY_PREVIOUS_UNTIL", f"{until_text!r} is not an ISO 8601 time") from None
            if until.tzinfo is None:
                until = until.replace(tzinfo=UTC)
        return cls(
            settings.secret("SECRET_KEY"),
            previous=previous,
            previous_until=until,
            next_key=next_key,
            ttl=timedelta(seconds=settings.get_int("API_JWT_TTL_SECONDS")),
        )

    def issue(
        self, *, key_id: str, project_id: int, role: str, now: datetime | None = None, ttl: timedelta | None = None
    ) -> IssuedToken:
        """A token for ``key_id``, signed with the current key, valid for ``ttl`` (default: the API's)."""
        now = now or datetime.now(UTC)
        expires_at = int((now + (ttl or self.ttl)).timestamp())
        payload = {
            "iss": ISSUER,
            "sub": key_id,
            "pid": project_id,
            "role": role,
            "iat": int(now.timestamp()),
            "exp": expires_at,
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(payload, self._current, algorithm=ALGORITHM, headers={"kid": self.kid})
        return IssuedToken(token, datetime.fromtimestamp(expires_at, UTC), self.kid)

    def _secret_for(self, kid: Any, now: datetime) -> str:
        if kid == self.kid:
            return self._current
        if kid is not None and kid == self.next_kid:
            assert self._next is not None
            return self._next
        if kid is not None and kid == self.previous_kid:
            if self.previous_until is not None and now < self.previous_until:
                assert self._previous is not None
                return self._previous
            raise TokenError("token was signed with a retired key: request a new token")
        raise TokenError("token was signed with an unknown key")

    def verify(self, token: str, *, now: datetime | None = None) -> Claims:
        now = now or datetime.now(UTC)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"token algorithm must be {ALGORITHM}")
        secret = self._secret_for(header.get("kid"), now)
        try:
            payload = jwt.decode(
                token, secret, algorithms=[ALGORITHM], issuer=ISSUER, options={"require": ["exp", "iat", "sub", "iss"]}
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired: request a new one") from None
        except jwt.PyJWTError:
            raise TokenError("token is not valid") from None
        key_id, project_id, role = payload.get("sub"), payload.get("pid"), payload.get("role")
        if not isinstance(key_id, str) or not isinstance(project_id, int) or not isinstance(role, str):
            raise TokenError("token is not valid")
        return Claims(key_id, project_id, role, datetime.fromtimestamp(int(payload["exp"]), UTC))
