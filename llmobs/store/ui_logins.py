"""One-time sign-in links for the web UI: ``llmobs ui`` creates one, the api redeems it.

A link carries a random token; only its SHA-256 is stored, with the API key it signs in as and a
short expiry. Redeeming marks it used in the same statement that checks it, so a link works once
even when two browsers race for it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

#: How long a link is good for unless the caller says otherwise.
DEFAULT_TTL = timedelta(minutes=10)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_login(conn: psycopg.Connection, key_id: str, ttl: timedelta = DEFAULT_TTL) -> str:
    """A new single-use token signing in as ``key_id`` for ``ttl``; expired links are purged on the
    way. Raises psycopg's ForeignKeyViolation when the key does not exist."""
    token = secrets.token_urlsafe(32)
    conn.execute("DELETE FROM ui_login_tokens WHERE expires_at < now() - interval '1 day'")
    conn.execute(
        "INSERT INTO ui_login_tokens (token_hash, key_id, expires_at) VALUES (%s, %s, now() + %s)",
        (_hash(token), key_id, ttl),
    )
    return token


async def aredeem_login(conn: psycopg.AsyncConnection, token: str) -> str | None:
    """The key id ``token`` signs in as, marking it used; None when it is unknown, used or expired
    (the caller cannot tell which, and need not)."""
    cur = await conn.execute(
        """UPDATE ui_login_tokens SET used_at = now()
           WHERE token_hash = %s AND used_at IS NULL AND expires_at > now() RETURNING key_id""",
        (_hash(token),),
    )
    row = await cur.fetchone()
    return row[0] if row else None
