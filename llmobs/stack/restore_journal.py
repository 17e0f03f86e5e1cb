"""The restore journal: a small file beside the data directory saying how far a restore got,
so that a restore killed at any moment is undone (or completed) by the next start.

It lives with the runtime because the runtime reads it before it starts PostgreSQL; restores
(:mod:`llmobs.backup.restore`) write it.

Phases: ``staging`` (the live data directory is untouched), ``swapped`` (the live directory was
moved aside and the restored one put in its place, not yet checked), ``verified`` (the restored
cluster is up and checked: it stays).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmobs.stack.postgres import PgCluster

log = logging.getLogger(__name__)


@dataclass
class RestoreJournal:
    pgdata: str
    phase: str
    staging: str
    aside: str
    backup: str
    target: str | None = None

    @staticmethod
    def path_for(pgdata: Path) -> Path:
        return pgdata.with_name(pgdata.name + ".restore.json")

    @classmethod
    def read(cls, pgdata: Path) -> RestoreJournal | None:
        try:
            return cls(**json.loads(cls.path_for(pgdata).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable restore journal %s: %s", cls.path_for(pgdata), exc)
            return None

    def write(self, phase: str) -> None:
        self.phase = phase
        path = self.path_for(Path(self.pgdata))
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(asdict(self), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def remove(self) -> None:
        self.path_for(Path(self.pgdata)).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def roll_back(journal: RestoreJournal, stop_server: Callable[[], None]) -> None:
    """Put the data directory that was live before the restore back in place. The restored copy
    (unverified, and recreatable from its backup) is removed; the old one never is.
    ``stop_server`` stops whatever PostgreSQL runs on the data directory (a failure leaves
    everything as it was, journal included)."""
    pgdata, staging, aside = Path(journal.pgdata), Path(journal.staging), Path(journal.aside)
    if journal.phase == "swapped" and aside.exists():
        stop_server()
        if pgdata.exists():
            shutil.rmtree(pgdata)
        os.rename(aside, pgdata)
        _fsync_dir(pgdata.parent)
    shutil.rmtree(staging, ignore_errors=True)
    journal.remove()


def finish_interrupted(pgdata: Path, stop_server: Callable[[], None]) -> str | None:
    """Called before PostgreSQL starts: undo a restore that was interrupted before its cluster
    was verified, or drop the journal of one that finished. Returns what was done, if anything."""
    journal = RestoreJournal.read(pgdata)
    if journal is None:
        return None
    if journal.phase == "verified":
        journal.remove()
        return None
    roll_back(journal, stop_server)
    return (
        f"an interrupted restore (backup {journal.backup}) was rolled back: the data directory "
        "from before it is in place again"
    )


def finish_interrupted_restore(cluster: PgCluster) -> str | None:
    """``finish_interrupted`` for a cluster on this host (the local runtime)."""

    def stop_server() -> None:
        cluster.stop(mode="immediate")

    return finish_interrupted(cluster.data_dir, stop_server)
