"""Erasure on request: removing one user's, session's or trace's data from a project.

A subject's data is every trace in which some span carries that user (session, trace) id, whole:
the other spans of such a trace hold the same conversation. Everything stored against those
traces goes with them, table by table (:data:`TRACE_TABLES`: spans with their messages, which are
columns of spans; log records; scores).

An erasure removes what was stored when it started (``as_of``): rows stored later, such as spans
of the same user acknowledged after the erasure, stay. It deletes BATCH_TRACES traces per
transaction, so no transaction is long and a subject with millions of spans does not hold locks
for minutes. Running it again finds nothing more: it is idempotent. Each run (not a dry run) is
audited in ``audit_log`` with who asked, the kind of subject, a SHA-256 of a user or session id
(never the id itself, nor any content) and how many rows went.

Works as the superuser (CLI) or as the app's group role with the project set for the session
(API): every statement also filters on ``project_id``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from psycopg import sql

from llmobs.errors import UsageError
from llmobs.store import audit

if TYPE_CHECKING:
    import psycopg

SubjectKind = Literal["user", "session", "trace"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = ("user", "session", "trace")
_SUBJECT_COLUMN: dict[SubjectKind, str] = {"user": "user_id", "session": "session_id", "trace": "trace_id"}
#: Traces deleted per transaction.
BATCH_TRACES = 100
MAX_SUBJECT_ID = 1000


@dataclass(frozen=True)
class TraceTable:
    """A table whose rows belong to a trace (``project_id``, ``trace_id``) and are erased with it;
    ``stored_at`` is the column saying when a row was stored."""

    name: str
    stored_at: str


#: Every table erased with a trace; one that does not exist (yet) in a database is skipped there.
TRACE_TABLES: tuple[TraceTable, ...] = (
    TraceTable("spans", "ingested_at"),
    TraceTable("log_records", "ingested_at"),
    TraceTable("scores", "created_at"),
)


def _present(conn: psycopg.Connection) -> list[TraceTable]:
    names = [t.name for t in TRACE_TABLES]
    rows = conn.execute("SELECT n FROM unnest(%s::text[]) n WHERE to_regclass(n) IS NOT NULL", (names,)).fetchall()
    found = {r[0] for r in rows}
    return [t for t in TRACE_TABLES if t.name in found]


@dataclass(frozen=True)
class Subject:
    kind: SubjectKind
    id: str

    def __post_init__(self) -> None:
        if self.kind not in SUBJECT_KINDS:
            raise UsageError(f"unknown subject {self.kind!r}; choose one of: {', '.join(SUBJECT_KINDS)}")
        if not self.id or len(self.id) > MAX_SUBJECT_ID or "\x00" in self.id:
            raise UsageError(f"a {self.kind} id must be 1 to {MAX_SUBJECT_ID} characters")
        if self.kind == "trace" and not (len(self.id) == 32 and all(c in "0123456789abcdef" for c in self.id)):
            raise UsageError(f"a trace id is 32 lowercase hex characters, not {self.id!r}")

    @property
    def column(self) -> str:
        return _SUBJECT_COLUMN[self.kind]

    @property
    def audit_target(self) -> str:
        """How the audit log names the subject: trace ids as they are, user and session ids only as a
        SHA-256 (the log must not keep the personal identifier it records the erasure of)."""
        if self.kind == "trace":
            return f"trace:{self.id}"
        return f"{self.kind}:sha256:{hashlib.sha256(self.id.encode()).hexdigest()}"


@dataclass
class ErasureResult:
    subject: Subject
    dry_run: bool
    as_of: datetime
    traces: int = 0
    #: table -> rows deleted (or, in a dry run, that would be)
    rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject.kind,
            "target": self.subject.audit_target,
            "dry_run": self.dry_run,
            "as_of": self.as_of,
            "traces": self.traces,
            "rows": self.rows,
        }


def _subject_traces(subject: Subject) -> sql.Composed:
    return sql.SQL(
        "SELECT DISTINCT trace_id FROM spans WHERE project_id = %(project)s AND {} = %(subject)s "
        "AND ingested_at <= %(as_of)s"
    ).format(sql.Identifier(subject.column))


def _count(
    conn: psycopg.Connection, tables: list[TraceTable], project_id: int, subject: Subject, as_of: datetime
) -> ErasureResult:
    result = ErasureResult(subject, True, as_of)
    params = {"project": project_id, "subject": subject.id, "as_of": as_of}
    traces = _subject_traces(subject)
    row = conn.execute(sql.SQL("SELECT count(*) FROM ({}) t").format(traces), params).fetchone()
    result.traces = int(row[0]) if row else 0
    for table in tables:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {t} WHERE project_id = %(project)s AND trace_id IN ({traces}) "
                "AND {stored} <= %(as_of)s"
            ).format(t=sql.Identifier(table.name), traces=traces, stored=sql.Identifier(table.stored_at)),
            params,
        ).fetchone()
        result.rows[table.name] = int(row[0]) if row else 0
    return result


def _delete_batch(
    conn: psycopg.Connection, tables: list[TraceTable], project_id: int, trace_ids: list[str], as_of: datetime
) -> dict[str, int]:
    deleted = {}
    with conn.transaction():
        for table in tables:
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE project_id = %s AND trace_id = ANY(%s) AND {} <= %s").format(
                    sql.Identifier(table.name), sql.Identifier(table.stored_at)
                ),
                (project_id, trace_ids, as_of),
            )
            deleted[table.name] = cur.rowcount
    return deleted


def erase(
    conn: psycopg.Connection,
    project_id: int,
    subject: Subject,
    *,
    dry_run: bool,
    actor: str,
    source: str | None,
) -> ErasureResult:
    """Erase ``subject``'s data from project ``project_id`` (or, with ``dry_run``, count it).
    ``conn`` is in autocommit. Interrupted, it leaves whole batches deleted and can simply be run
    again. The audit entry is written after the last batch."""
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    as_of: datetime = row[0]
    tables = _present(conn)
    if dry_run:
        return _count(conn, tables, project_id, subject, as_of)
    result = ErasureResult(subject, False, as_of, rows={t.name: 0 for t in tables})
    batch = sql.SQL("{} LIMIT %(limit)s").format(_subject_traces(subject))
    params = {"project": project_id, "subject": subject.id, "as_of": as_of, "limit": BATCH_TRACES}
    while True:
        trace_ids = [r[0] for r in conn.execute(batch, params).fetchall()]
        if not trace_ids:
            break
        for table, count in _delete_batch(conn, tables, project_id, trace_ids, as_of).items():
            result.rows[table] += count
        result.traces += len(trace_ids)
    with conn.transaction():
        audit.record(
            conn,
            "erase",
            actor=actor,
            project_id=project_id,
            target=subject.audit_target,
            source=source,
            details={"subject": subject.kind, "as_of": as_of, "traces": result.traces, "rows": result.rows},
        )
    return result
