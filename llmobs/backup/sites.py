"""Where a restore acts: the cluster's data directory and how to stop and start it and the
services that write to it. The local runtime's site wraps LocalStack; tests use a bare cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.proc import run
from llmobs.progress import Progress
from llmobs.stack.postgres import PgCluster, PgConfig

if TYPE_CHECKING:
    from llmobs.stack.local import LocalStack


@dataclass
class ClusterSite:
    """A PostgreSQL cluster we start and stop ourselves, and nothing else."""

    cluster: PgCluster
    config: PgConfig
    redis_data: Path | None = None
    writers: list[str] = field(default_factory=list)

    @property
    def pgdata(self) -> Path:
        return self.cluster.data_dir

    @property
    def log_hint(self) -> str:
        return f"see {self.cluster.log_file}"

    def owner(self) -> tuple[int, int] | None:
        """Owner for a restored data directory: that of the current one, else the OS user."""
        try:
            st = self.pgdata.stat()
            return st.st_uid, st.st_gid
        except FileNotFoundError:
            user = self.cluster.os_user
            return (user.uid, user.gid) if user else None

    def db_running(self) -> bool:
        return self.cluster.running_pid() is not None

    def live_timeline(self) -> int | None:
        """The timeline of the data directory's latest checkpoint (pg_controldata: works stopped)."""
        if not self.cluster.initialized:
            return None
        out = run([self.cluster.binaries("pg_controldata"), self.pgdata], env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
                  ).stdout.decode()
        for line in out.splitlines():
            if line.startswith("Latest checkpoint's TimeLineID:"):
                return int(line.split(":")[1])
        return None

    def stop_db(self, progress: Progress) -> None:
        progress.step("Stopping PostgreSQL")
        self.cluster.stop(mode="fast")

    def start_db(self, progress: Progress, *, timeout: int) -> None:
        progress.step("Starting PostgreSQL")
        self.cluster.write_config(self.config)
        self.cluster.start(timeout=timeout)

    def running_writers(self) -> list[str]:
        return list(self.writers)

    def redis_running(self) -> bool:
        return False

    def stop_services(self, services: Sequence[str], progress: Progress) -> None:
        """Services other than PostgreSQL: a bare cluster has none."""

    def start_services(self, services: Sequence[str], progress: Progress) -> None:
        """Services other than PostgreSQL: a bare cluster has none."""


class LocalStackSite(ClusterSite):
    """The local runtime's cluster and services."""

    def __init__(self, stack: LocalStack) -> None:
        super().__init__(stack.cluster, stack.pg_config(), redis_data=stack.redis.data_dir)
        self.stack = stack

    def running_writers(self) -> list[str]:
        states = self.stack.states()
        return [s for s in ("collector", "api") if states.get(s) and states[s].state in ("running", "starting")]

    def stop_services(self, services: Sequence[str], progress: Progress) -> None:
        if services:
            self.stack.stop(list(services), progress)

    def start_services(self, services: Sequence[str], progress: Progress) -> None:
        if services:
            self.stack.start(list(services), progress)

    def redis_running(self) -> bool:
        return self.stack.redis.running_pid() is not None

