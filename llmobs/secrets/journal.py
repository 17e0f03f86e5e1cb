"""How far a rotation got: ``run/rotation.json`` (mode 0600, no secret values), and the lock
that keeps two rotations of one project from running at once.

The journal is written before the first change and after every step, so a rotation killed at
any moment is finished by the next `llmobs secrets rotate`: it skips the recorded steps and redoes
the one that was under way (every step can be redone). The new secret values themselves are
staged in ``.env`` (see ``store.py``), never here.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmobs.config import write_private_file
from llmobs.errors import AlreadyRunning, LlmobsError


def journal_path(project_dir: Path) -> Path:
    return project_dir / "run" / "rotation.json"


@dataclass
class RotationJournal:
    id: str
    started_at: str
    runtime: str
    targets: list[str]
    #: names of the secrets this rotation changes
    secrets: list[str]
    #: the app login roles before and after (db target): fixed when the rotation is planned
    app_user_from: str | None = None
    app_user_to: str | None = None
    #: whether the stack runs the `ha` profile (Patroni's nodes take the new superuser password)
    ha: bool = False
    #: steps finished, in order
    done: list[str] = field(default_factory=list)
    #: when each secret's new value went into use (ISO), for the rotation log
    swapped_at: dict[str, str] = field(default_factory=dict)
    #: services the rolling restart replaced
    restarted: list[str] = field(default_factory=list)
    project_dir: str = ""

    @classmethod
    def read(cls, project_dir: Path) -> RotationJournal | None:
        path = journal_path(project_dir)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LlmobsError(
                f"the rotation journal {path} is unreadable: {exc}",
                hint="it holds no secret: inspect it, then delete it to start over",
            ) from None
        data["project_dir"] = str(project_dir)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self) -> None:
        data = asdict(self)
        data.pop("project_dir")
        write_private_file(journal_path(Path(self.project_dir)), json.dumps(data, indent=1) + "\n")

    def mark(self, step: str) -> None:
        if step not in self.done:
            self.done.append(step)
        self.save()

    def remove(self) -> None:
        journal_path(Path(self.project_dir)).unlink(missing_ok=True)


@contextmanager
def rotation_lock(project_dir: Path) -> Iterator[None]:
    """An advisory flock on ``run/rotation.lock``; the kernel drops it when the holder dies."""
    path = project_dir / "run" / "rotation.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunning(
                f"another secret rotation is running ({holder})", hint="wait for it to finish; this run changed nothing"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
