"""Fixtures of the backup tests (tests/backup)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.backup import ArchivedCluster, destroy, make_archived_cluster


@pytest.fixture
def archived() -> Iterator[ArchivedCluster]:
    """A PostgreSQL cluster of its own with WAL archiving and a backup directory (restores
    replace its data directory), destroyed when the test ends."""
    cluster = make_archived_cluster()
    try:
        yield cluster
    finally:
        destroy(cluster)
