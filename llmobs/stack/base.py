"""The one interface through which `llmobs` drives the stack, whatever runs it.

Two runtimes implement it: ``local`` (processes on this host) and ``compose`` (Docker Compose).
Health probes, bootstrap/migrations, backup, restore, rotation and key management are written
once above it (see ``lifecycle.py``) and call only these methods.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llmobs.config import Settings
    from llmobs.progress import Progress

State = Literal["running", "stopped", "starting", "exited", "not available"]


@dataclass
class RuntimeState:
    """What the runtime knows of one service, before any health probe."""

    state: State
    #: running replicas / desired replicas
    replicas: int = 0
    desired: int = 0
    pids: list[int] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    image: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Mount:
    """A volume for a one-off job: a named volume (compose) or a host directory (local)."""

    source: str
    target: str
    read_only: bool = False


class Stack(ABC):
    """Start, stop and inspect the services of one project."""

    runtime: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def available_services(self) -> tuple[str, ...]:
        """Services this runtime can run (local cannot run Grafana or pgAdmin)."""

    @abstractmethod
    def start(self, services: Sequence[str], progress: Progress) -> None:
        """Start the given services that are not running; leave running ones alone."""

    @abstractmethod
    def stop(self, services: Sequence[str] | None = None, progress: Progress | None = None) -> None:
        """Stop the given services (all when None), cleanly: no process left behind."""

    @abstractmethod
    def restart(self, services: Sequence[str], progress: Progress) -> None:
        """Restart the given services so they re-read their configuration, one replica at a time
        and without closing their published ports (secret rotation relies on it)."""

    @abstractmethod
    def remove_data(self) -> list[str]:
        """Delete the stack's data (volumes or data directories); the stack must be stopped.
        Returns what was removed, for the operator."""

    @abstractmethod
    def states(self) -> dict[str, RuntimeState]:
        """Runtime state of every service of the stack."""

    @abstractmethod
    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside (or, local: alongside) a running service."""

    @abstractmethod
    def run_job(
        self,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a one-off `llmobs` job (``argv`` are its arguments) with the given mounts."""

    @abstractmethod
    def scale(self, replicas: Mapping[str, int], progress: Progress) -> None:
        """Run ``replicas[service]`` instances of each scalable service."""

    @abstractmethod
    def logs(self, service: str | None, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """Log lines of one service (all when None), oldest first; endless when ``follow``."""

    def data_paths(self) -> dict[str, Path]:
        """Host paths of data this runtime keeps on the host (local runtime); empty for compose."""
        return {}
