"""API keys: the rows of ``api_keys`` and the projects they belong to. The token format
(generation, id, hash) is :mod:`llmobs.key_format`'s.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from llmobs.errors import UsageError
from llmobs.key_format import generate_api_key, hash_token, key_id_of
from llmobs.store import audit

if TYPE_CHECKING:
    import psycopg

Role = Literal["reader", "writer", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "admin")
#: What a role may do includes everything a lower role may do.
ROLE_RANK: dict[str, int] = {"reader": 0, "writer": 1, "admin": 2}

_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # the CHECK of projects.name


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


def store_key(
    conn: psycopg.Connection, token: str, *, project: str, role: Role, name: str, expires_in_days: int | None = None
) -> ApiKey:
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


_GET_SQL = f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE k.id = %s"


def get_key(conn: psycopg.Connection, key_id: str) -> ApiKey | None:
    row = conn.execute(_GET_SQL, (key_id,)).fetchone()
    return _row_to_key(row) if row else None


async def aget_key(conn: psycopg.AsyncConnection, key_id: str) -> ApiKey | None:
    """:func:`get_key` on an async connection (tuple rows)."""
    cur = await conn.execute(_GET_SQL, (key_id,))
    row = await cur.fetchone()
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


_AUTH_SQL = f"SELECT {_KEY_COLUMNS}, k.key_hash FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE k.id = %s"


def _check_token(row: tuple | None, token: str) -> ApiKey | None:
    if row is None or not hmac.compare_digest(row[-1], hash_token(token)):
        return None
    key = _row_to_key(row[:-1])
    return key if key.active else None


_TOUCH_SQL = "UPDATE api_keys SET last_used_at = now() WHERE id = %s"


def authenticate(conn: psycopg.Connection, token: str) -> ApiKey | None:
    """The active key matching ``token``, or None. Constant-time comparison of the hash. A key
    that matches is marked as used just now (``keys list`` shows it): callers authenticate when
    their key cache misses, so a key's last use is known to within that cache's lifetime."""
    key_id = key_id_of(token)
    if key_id is None:
        return None
    key = _check_token(conn.execute(_AUTH_SQL, (key_id,)).fetchone(), token)
    if key is not None:
        conn.execute(_TOUCH_SQL, (key_id,))
    return key


async def aauthenticate(conn: psycopg.AsyncConnection, token: str) -> ApiKey | None:
    """:func:`authenticate` on an async connection."""
    key_id = key_id_of(token)
    if key_id is None:
        return None
    cur = await conn.execute(_AUTH_SQL, (key_id,))
    key = _check_token(await cur.fetchone(), token)
    if key is not None:
        await conn.execute(_TOUCH_SQL, (key_id,))
    return key


@dataclass(frozen=True)
class CreatedKey:
    token: str
    key: ApiKey
    project_created: bool


def create_key(
    conn: psycopg.Connection,
    *,
    project: str,
    role: Role,
    actor: str,
    name: str = "",
    expires_in_days: int | None = None,
    source: str | None = None,
) -> CreatedKey:
    """A new key for ``project`` (created when missing), recorded in the audit log in the same
    transaction. The token is only in the result: show it once, it cannot be recovered."""
    if expires_in_days is not None and expires_in_days < 1:
        raise UsageError("expiry must be at least one day")
    if not _PROJECT_RE.match(project):
        raise UsageError(
            f"invalid project name {project!r}: 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    with conn.transaction():
        project_id, project_created = ensure_project(conn, project)
        token = generate_api_key().token
        key = store_key(conn, token, project=project, role=role, name=name, expires_in_days=expires_in_days)
        if project_created:
            audit.record(conn, "project.create", actor=actor, project_id=project_id, target=project, source=source)
        audit.record(
            conn,
            "key.create",
            actor=actor,
            project_id=project_id,
            target=key.key_id,
            source=source,
            details={"role": role, "name": name, "expires_at": key.expires_at.isoformat() if key.expires_at else None},
        )
    return CreatedKey(token, key, project_created)


def revoke(conn: psycopg.Connection, key_id: str, *, actor: str, source: str | None = None) -> ApiKey:
    """Revoke ``key_id`` (audited); revoking a revoked key changes nothing and records nothing."""
    with conn.transaction():
        before = get_key(conn, key_id)
        if before is None:
            raise UsageError(f"no API key with id {key_id!r}", hint="`llmobs keys list` shows the ids")
        key = revoke_key(conn, key_id)
        assert key is not None
        if before.revoked_at is None:
            audit.record(
                conn,
                "key.revoke",
                actor=actor,
                project_id=key.project_id,
                target=key_id,
                source=source,
                details={"role": key.role, "name": key.name},
            )
    return key
