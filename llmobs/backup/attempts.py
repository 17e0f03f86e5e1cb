"""Failed backup attempts, recorded as Barman records a FAILED backup: its id and type, the step
it was at, the first line of the error and the time. The partial files are removed (they can be
large and are of no use), the record stays beside the backups (``<id>.failed.json``): `backup
list` shows it, and `status` is degraded while the newest attempt of a type is a failure.
`backup prune` drops the records older than the oldest backup it keeps."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmobs.progress import Progress
from llmobs.store.db import first_line

log = logging.getLogger(__name__)

SUFFIX = ".failed.json"


@dataclass(frozen=True)
class FailedAttempt:
    id: str
    type: str
    #: the step the attempt was at (the last progress step it announced)
    step: str
    #: first line of the error
    error: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


class StepTracker:
    """Progress that passes everything on and remembers the step under way."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.step_name = "starting"

    def step(self, message: str) -> None:
        self.step_name = message
        self.inner.step(message)

    def done(self, message: str) -> None:
        self.inner.done(message)

    def warn(self, message: str) -> None:
        self.inner.warn(message)


def record_path(backup_dir: Path, backup_id: str) -> Path:
    return backup_dir / f"{backup_id}{SUFFIX}"


@contextmanager
def recording_failure(backup_dir: Path, backup_id: str, backup_type: str, tracker: StepTracker) -> Iterator[None]:
    """Run the attempt; when it raises, write its failure record, then let the error go on."""
    try:
        yield
    except BaseException as exc:
        attempt = FailedAttempt(backup_id, backup_type, tracker.step_name, first_line(exc), datetime.now(UTC))
        try:
            write_failure(backup_dir, attempt)
        except OSError as io_error:
            log.error("could not record the failed backup %s: %s", backup_id, io_error)
        raise


def write_failure(backup_dir: Path, attempt: FailedAttempt) -> None:
    path = record_path(backup_dir, attempt.id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(attempt.to_dict()))
    os.replace(tmp, path)
    log.error("backup %s failed at %r: %s", attempt.id, attempt.step, attempt.error)


def failed_attempts(backup_dir: Path) -> list[FailedAttempt]:
    """Every recorded failure, oldest first (unreadable records are skipped with a warning)."""
    found = []
    for path in sorted(backup_dir.glob(f"*{SUFFIX}")) if backup_dir.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            found.append(FailedAttempt(**{**data, "at": datetime.fromisoformat(data["at"])}))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable failed-backup record %s: %s", path, exc)
    return sorted(found, key=lambda a: a.at)


def unresolved(attempts: list[FailedAttempt], newest_ok: dict[str, datetime]) -> list[FailedAttempt]:
    """The failures newer than the newest good backup of their type: what `status` warns about."""
    return [a for a in attempts if a.type not in newest_ok or a.at > newest_ok[a.type]]


def forget_before(backup_dir: Path, when: datetime) -> list[str]:
    """Remove the records of failures older than ``when``; returns their ids."""
    gone = []
    for attempt in failed_attempts(backup_dir):
        if attempt.at < when:
            record_path(backup_dir, attempt.id).unlink(missing_ok=True)
            gone.append(attempt.id)
    return gone
