"""Counts of spans accepted, rejected and refused for ``llmobs_ingest_stats`` (the Operations
dashboard), summed in memory and written every few seconds: one small statement per source and
project instead of one per request. Counts not yet written when a process dies are lost; they
are statistics, not data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmobs.store import ingest_stats

if TYPE_CHECKING:
    import psycopg

FLUSH_INTERVAL = 10.0

Counts = dict[tuple[str, int | None], list[int]]


class IngestCounts:
    def __init__(self) -> None:
        self._counts: Counts = {}

    def add(
        self, source: str, project_id: int | None, *, accepted: int = 0, rejected: int = 0, refused: int = 0
    ) -> None:
        entry = self._counts.get((source, project_id))
        if entry is None:
            entry = self._counts[(source, project_id)] = [0, 0, 0]
        entry[0] += accepted
        entry[1] += rejected
        entry[2] += refused

    def take(self) -> Counts:
        taken, self._counts = self._counts, {}
        return taken

    def restore(self, taken: Counts) -> None:
        for (source, project_id), (accepted, rejected, refused) in taken.items():
            self.add(source, project_id, accepted=accepted, rejected=rejected, refused=refused)


def write_counts(conn: psycopg.Connection, taken: Counts) -> None:
    """Add ``taken`` to the current minute (the caller commits)."""

    for (source, project_id), (accepted, rejected, refused) in taken.items():
        ingest_stats.count(conn, source, project_id, accepted=accepted, rejected=rejected, refused=refused)
