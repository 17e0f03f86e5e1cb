"""Per-minute counts of spans accepted, rejected and refused, by project and source
(``llmobs_ingest_stats``, shown by the Operations dashboard).

Rejected spans were invalid (the client must fix them); refused ones met a retryable condition
(queue full, database down) and may come again. Writers add to the current minute; a count lost
to a failing database is not worth failing the request for, so callers may ignore errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

_COUNT = "SELECT llmobs_count_ingest(%s, %s, %s, %s, %s)"


def count(
    conn: psycopg.Connection,
    source: str,
    project_id: int | None,
    *,
    accepted: int = 0,
    rejected: int = 0,
    refused: int = 0,
) -> None:
    conn.execute(_COUNT, (source, project_id, accepted, rejected, refused))


async def acount(
    conn: psycopg.AsyncConnection,
    source: str,
    project_id: int | None,
    *,
    accepted: int = 0,
    rejected: int = 0,
    refused: int = 0,
) -> None:
    await conn.execute(_COUNT, (source, project_id, accepted, rejected, refused))
