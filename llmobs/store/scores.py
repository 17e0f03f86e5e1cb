"""Scores and feedback on traces (``init-sql/0041_scores.sql``): numeric values or categorical
labels, with a comment and where they came from. Row-level security keeps each project's own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import psycopg

ScoreSource = Literal["api", "ui", "eval", "human"]
SCORE_SOURCES: tuple[ScoreSource, ...] = ("api", "ui", "eval", "human")
#: Buckets of score series align with the rollups' (a Monday: weeks align too).
SERIES_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
_COLUMNS = "id, trace_id, span_id, name, value, label, comment, source, key_id, created_at"


@dataclass(frozen=True)
class NewScore:
    trace_id: str
    name: str
    value: float | None
    label: str | None
    comment: str
    source: ScoreSource
    span_id: str | None = None


async def _rows(conn: psycopg.AsyncConnection, sql: str, params: Any) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


async def trace_exists(conn: psycopg.AsyncConnection, project_id: int, trace_id: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM spans WHERE project_id = %s AND trace_id = %s LIMIT 1", (project_id, trace_id)
    )
    return await cur.fetchone() is not None


async def add_score(conn: psycopg.AsyncConnection, project_id: int, key_id: str, score: NewScore) -> dict[str, Any]:
    """Store ``score`` for ``project_id`` (in a read-write transaction scoped to that project)."""
    rows = await _rows(
        conn,
        f"""INSERT INTO scores (project_id, trace_id, span_id, name, value, label, comment, source, key_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
        (
            project_id,
            score.trace_id,
            score.span_id,
            score.name,
            score.value,
            score.label,
            score.comment,
            score.source,
            key_id,
        ),
    )
    return rows[0]


async def trace_scores(conn: psycopg.AsyncConnection, project_id: int, trace_id: str) -> list[dict[str, Any]]:
    """The scores of one trace, oldest first."""
    return await _rows(
        conn,
        f"SELECT {_COLUMNS} FROM scores WHERE project_id = %s AND trace_id = %s ORDER BY created_at, id",
        (project_id, trace_id),
    )


async def score_series(
    conn: psycopg.AsyncConnection, project_id: int, start: datetime, end: datetime, interval: timedelta
) -> list[dict[str, Any]]:
    """Per score name, the scores recorded in each ``interval`` bucket of [start, end): count, and
    the average, minimum and maximum of their numeric values (null for labels only)."""
    rows = await _rows(
        conn,
        """SELECT name, date_bin(%(interval)s, created_at, %(origin)s) AS time, count(*) AS count,
                  avg(value) AS avg, min(value) AS min, max(value) AS max
           FROM scores WHERE project_id = %(project)s AND created_at >= %(start)s AND created_at < %(end)s
           GROUP BY 1, 2 ORDER BY 1, 2""",
        {
            "project": project_id,
            "interval": interval,
            "origin": SERIES_ORIGIN,
            "start": start,
            "end": end,
        },
    )
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(row.pop("name"), []).append(row)
    return [{"name": name, "points": points} for name, points in series.items()]
