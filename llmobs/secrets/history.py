"""The rotation log: ``secrets-rotation.log`` in the project directory, one JSON line per event,
saying which secret was rotated when, by whom, never its value.

It lives beside ``.env`` (not in the database): it describes the secrets in that file, and must
stay true when the database is restored to an older state. `llmobs secrets status` reads it; each
rotation also goes to the database's audit log.

Secrets rotated before the log existed have no entry: the first rotation records a ``baseline``
for each of them, the time ``.env`` was last written (by `llmobs init`, as a rule) — their age
is at least that.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmobs.config import ENV_FILE
from llmobs.secrets.catalog import SECRETS

LOG_NAME = "secrets-rotation.log"


def log_path(project_dir: Path) -> Path:
    return project_dir / LOG_NAME


@dataclass(frozen=True)
class LogEntry:
    at: datetime
    secret: str
    event: str  # rotated | baseline
    rotation_id: str | None = None
    actor: str | None = None


def _append(project_dir: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    path = log_path(project_dir)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def entries(project_dir: Path) -> list[LogEntry]:
    """Every entry, oldest first; unreadable lines (a torn last line after a crash) are skipped."""
    try:
        lines = log_path(project_dir).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            data = json.loads(line)
            at = datetime.fromisoformat(data["at"])
            found.append(
                LogEntry(
                    at if at.tzinfo else at.replace(tzinfo=UTC),
                    str(data["secret"]),
                    str(data["event"]),
                    data.get("rotation_id"),
                    data.get("actor"),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return found


def ensure_baseline(project_dir: Path) -> None:
    """Before the first rotation of a project: a baseline entry for every tracked secret, dated
    when ``.env`` was last written (it is about to be rewritten)."""
    if log_path(project_dir).exists():
        return
    try:
        written = datetime.fromtimestamp((project_dir / ENV_FILE).stat().st_mtime, UTC)
    except OSError:
        written = datetime.now(UTC)
    _append(project_dir, [{"at": written.isoformat(), "secret": s.name, "event": "baseline"} for s in SECRETS])


def record_rotated(project_dir: Path, rotation_id: str, rotated: dict[str, str], actor: str) -> None:
    """Log each secret in ``rotated`` (name -> ISO time it went into use) once per rotation id:
    a rerun after a crash does not log twice."""
    seen = {(e.rotation_id, e.secret) for e in entries(project_dir) if e.event == "rotated"}
    _append(
        project_dir,
        [
            {"at": at, "secret": name, "event": "rotated", "rotation_id": rotation_id, "actor": actor}
            for name, at in rotated.items()
            if (rotation_id, name) not in seen
        ],
    )


def last_change(project_dir: Path) -> dict[str, LogEntry]:
    """The latest entry per secret."""
    latest: dict[str, LogEntry] = {}
    for entry in entries(project_dir):
        if entry.secret not in latest or entry.at >= latest[entry.secret].at:
            latest[entry.secret] = entry
    return latest
