"""API keys: generation, hashing, and the rows of ``api_keys``.

A key looks like ``llmobs_<id>_<secret>``. The id is stored in clear so a key can be listed and
revoked; only the SHA-256 of the whole token is stored, never the token. The secret has 190 bits
of entropy, so a fast hash is enough (a slow password hash guards low-entropy secrets).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from llmobs.errors import UsageError

if TYPE_CHECKING:
    import psycopg

Role = Literal["reader", "writer", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "admin")
#: What a role may do includes everything a lower role may do.
ROLE_RANK: dict[str, int] = {"reader": 0, "writer": 1, "admin": 2}

_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_TOKEN_RE = re.compile(r"^llmobs_([a-z0-9]{12})_([A-Za-z0-9]{32})$")


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    token: str


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    project_id: int
    project: str
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        now = datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def generate_api_key() -> NewApiKey:
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
    return NewApiKey(key_id, f"llmobs_{key_id}_{secret}")


def key_id_of(token: str) -> str | None:
    match = _TOKEN_RE.match(token)
    return match.group(1) if match else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_KEY_COLUMNS = """k.id, k.project_id, p.name, k.name, k.role, k.created_at, k.expires_at, k.revoked_at,
                  k.last_used_at"""


def _row_to_key(row: tuple) -> ApiKey:
    return ApiKey(*row)


def ensure_project(conn: psycopg.Connection, name: str) -> tuple[int, bool]:
    """The id of project ``name``, creating it if needed; the flag says whether it was created."""
    row = conn.execute(
        "INSERT INTO projects (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id", (name,)
    ).fetchone()
    if row:
        return row[0], True
    row = conn.execute("SELECT id FROM projects WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return row[0], False


def store_key(conn: psycopg.Connection, token: str, *, project: str, role: Role, name: str,
              expires_in_days: int | None = None) -> ApiKey:
    """Record ``token`` (hashed) for ``project`` with ``role``; an existing row for it is kept."""
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    key_id = key_id_of(token)
    if key_id is None:
        raise UsageError("malformed API key (expected llmobs_<12 chars>_<32 chars>)")
    project_id, _ = ensure_project(conn, project)
    expires = (datetime.now(UTC) + timedelta(days=expires_in_days)) if expires_in_days else None
    conn.execute(
        """INSERT INTO api_keys (id, project_id, name, role, key_hash, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING""",
        (key_id, project_id, name, role, hash_token(token), expires),
    )
    found = get_key(conn, key_id)
    assert found is not None
    return found


def get_key(conn: psycopg.Connection, key_id: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE k.id = %s",
        (key_id,),
    ).fetchone()
    return _row_to_key(row) if row else None


def list_keys(conn: psycopg.Connection, project: str | None = None) -> list[ApiKey]:
    sql = f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN projects p ON p.id = k.project_id"
    params: tuple = ()
    if project:
        sql += " WHERE p.name = %s"
        params = (project,)
    return [_row_to_key(r) for r in conn.execute(sql + " ORDER BY k.created_at, k.id", params)]


def revoke_key(conn: psycopg.Connection, key_id: str) -> ApiKey | None:
    conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (key_id,))
    return get_key(conn, key_id)


def authenticate(conn: psycopg.Connection, token: str) -> ApiKey | None:
    """The active key matching ``token``, or None. Constant-time comparison of the hash."""
    key_id = key_id_of(token)
    if key_id is None:
        return None
    row = conn.execute(
        f"SELECT {_KEY_COLUMNS}, k.key_hash FROM api_keys k JOIN projects p ON p.id = k.project_id "
        "WHERE k.id = %s",
        (key_id,),
    ).fetchone()
    if row is None or not hmac.compare_digest(row[-1], hash_token(token)):
        return None
    key = _row_to_key(row[:-1])
    return key if key.active else None
