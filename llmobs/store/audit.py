"""The audit log: who did which admin action, when, from where (``audit_log``).

Admin actions (API key create and revoke, restores, secret rotations) append one row each, in the
same transaction as the action when there is one, so an action and its record stand or fall
together. Entries are never updated.

The SQL lives here once; :func:`record` / :func:`entries` run it on a sync connection (CLI) and
:func:`arecord` / :func:`aentries` on an async one (API).
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    project_id: int | None
    project: str | None
    actor: str
    action: str
    target: str | None
    source: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditQuery:
    project_id: int | None = None
    action: str | None = None
    since: datetime | None = None
    limit: int = 100


_INSERT = """INSERT INTO audit_log (project_id, actor, action, target, source, details)
             VALUES (%s, %s, %s, %s, %s, %s::jsonb) RETURNING id"""


def cli_actor() -> str:
    """The actor of an action run from the CLI: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


def cli_source() -> str:
    return socket.gethostname()


def _insert_params(
    action: str,
    *,
    actor: str,
    project_id: int | None,
    target: str | None,
    source: str | None,
    details: dict[str, Any] | None,
) -> tuple:
    return (project_id, actor, action, target, source, json.dumps(details or {}, default=str))


def record(
    conn: psycopg.Connection,
    action: str,
    *,
    actor: str,
    project_id: int | None = None,
    target: str | None = None,
    source: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one entry; returns its id. Never put a secret into ``details``."""
    row = conn.execute(
        _INSERT,
        _insert_params(action, actor=actor, project_id=project_id, target=target, source=source, details=details),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def arecord(
    conn: psycopg.AsyncConnection,
    action: str,
    *,
    actor: str,
    project_id: int | None = None,
    target: str | None = None,
    source: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    cur = await conn.execute(
        _INSERT,
        _insert_params(action, actor=actor, project_id=project_id, target=target, source=source, details=details),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0] if isinstance(row, tuple) else row["id"])


def _select(q: AuditQuery) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    if q.project_id is not None:
        terms.append("a.project_id = %s")
        params.append(q.project_id)
    if q.action is not None:
        terms.append("a.action = %s")
        params.append(q.action)
    if q.since is not None:
        terms.append("a.at >= %s")
        params.append(q.since)
    where = f"WHERE {' AND '.join(terms)}" if terms else ""
    params.append(q.limit)
    return (
        f"""SELECT a.id, a.at, a.project_id, p.name, a.actor, a.action, a.target, a.source, a.details
                FROM audit_log a LEFT JOIN projects p ON p.id = a.project_id
                {where} ORDER BY a.at DESC, a.id DESC LIMIT %s""",
        params,
    )


def _entry(row: Any) -> AuditEntry:
    values = tuple(row.values()) if isinstance(row, dict) else tuple(row)
    return AuditEntry(*values)


def entries(conn: psycopg.Connection, q: AuditQuery) -> list[AuditEntry]:
    """Newest first."""
    sql, params = _select(q)
    return [_entry(r) for r in conn.execute(sql, params).fetchall()]


async def aentries(conn: psycopg.AsyncConnection, q: AuditQuery) -> list[AuditEntry]:
    sql, params = _select(q)
    cur = await conn.execute(sql, params)
    return [_entry(r) for r in await cur.fetchall()]
