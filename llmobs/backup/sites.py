"""Where a restore acts: the cluster's data directory and how to stop and start it and the
services that write to it.

- ``ClusterSite``: a PostgreSQL cluster we start and stop ourselves (tests);
- ``LocalStackSite``: the local runtime's cluster and services;
- ``ComposeJobSite``: inside a restore job container of the compose runtime, which has the data
  volume mounted and asks the `llmobs` process on the host to stop and start services
  (``control.py``).
"""

from __future__ import annotations

import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs.backup.pgclient import admin_connection, binaries_for
from llmobs.errors import LlmobsError
from llmobs.proc import run
from llmobs.progress import Progress
from llmobs.stack.lifecycle import wait_healthy
from llmobs.stack.postgres import PgBinaries, PgCluster, PgConfig

if TYPE_CHECKING:
    from llmobs.backup.control import HostChannel
    from llmobs.config import Settings
    from llmobs.stack.local import LocalStack

#: the services that write to the database, stopped during a restore
WRITERS = ("collector", "api")
DB_SERVICE = "timescaledb"


class Site(ABC):
    #: where the data directory is, as this process sees it
    pgdata: Path
    #: Redis's and Grafana's data directories, when a restore can replace them here
    redis_data: Path | None = None
    grafana_data: Path | None = None
    #: where WAL fetched from S3 for a restore goes, as the server sees it too (None: the
    #: repository's WAL cache, which a server on this host reads)
    server_wal_cache: Path | None = None
    #: timelines no restore recorded come from failovers (profile `ha`; see pitr.choose_timeline)
    timelines_from_failovers: bool = False

    @property
    @abstractmethod
    def log_hint(self) -> str:
        """Where to look when PostgreSQL fails."""

    def owner(self) -> tuple[int, int] | None:
        """Owner for a restored data directory: that of the current one."""
        try:
            st = self.pgdata.stat()
            return st.st_uid, st.st_gid
        except FileNotFoundError:
            return None

    def live_timeline(self) -> int | None:
        """The timeline of the data directory's latest checkpoint (pg_controldata: works stopped)."""
        if not (self.pgdata / "PG_VERSION").is_file():
            return None
        out = run(
            [self.binaries()("pg_controldata"), self.pgdata], env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
        ).stdout.decode()
        for line in out.splitlines():
            if line.startswith("Latest checkpoint's TimeLineID:"):
                return int(line.split(":")[1])
        return None

    @abstractmethod
    def binaries(self) -> PgBinaries:
        """Programs matching the data directory's major version."""

    @abstractmethod
    def db_running(self) -> bool: ...

    @abstractmethod
    def stop_db(self, progress: Progress, *, immediate: bool = False) -> None: ...

    @abstractmethod
    def start_db(self, progress: Progress, *, timeout: int) -> None:
        """Start PostgreSQL; returns once it accepts connections (in recovery: once consistent)."""

    def log_mark(self) -> int:
        """A mark in PostgreSQL's log, for ``server_error_since``."""
        return 0

    def server_error_since(self, mark: int) -> str | None:
        """PostgreSQL's own last FATAL/PANIC message since ``mark``, where this site can read the
        log (None elsewhere: ``log_hint`` says where to look)."""
        return None

    def running_writers(self) -> list[str]:
        return []

    def service_running(self, service: str) -> bool:
        """Whether a service other than PostgreSQL (redis, grafana) runs."""
        return False

    def install_restored(self, staging: Path) -> None:
        """Put the staged, restored data directory where the server starts from (the live one
        was moved aside already)."""
        os.rename(staging, self.pgdata)

    def after_restore(self, progress: Progress) -> None:
        """Once the restored cluster is verified: what else it needs (replicas, under Patroni).
        Nothing here."""
        return None

    @abstractmethod
    def stop_services(self, services: Sequence[str], progress: Progress) -> None:
        """Stop services other than PostgreSQL."""

    @abstractmethod
    def start_services(self, services: Sequence[str], progress: Progress) -> None:
        """Start services other than PostgreSQL."""


class ClusterSite(Site):
    """A PostgreSQL cluster we start and stop ourselves, and nothing else."""

    def __init__(self, cluster: PgCluster, config: PgConfig, redis_data: Path | None = None) -> None:
        self.cluster = cluster
        self.config = config
        self.pgdata = cluster.data_dir
        self.redis_data = redis_data

    @property
    def log_hint(self) -> str:
        return f"see {self.cluster.log_file}"

    def owner(self) -> tuple[int, int] | None:
        user = self.cluster.os_user
        return super().owner() or ((user.uid, user.gid) if user else None)

    def binaries(self) -> PgBinaries:
        return self.cluster.binaries

    def log_mark(self) -> int:
        return self.cluster.log_size()

    def server_error_since(self, mark: int) -> str | None:
        return self.cluster.fatal_error_since(mark)

    def db_running(self) -> bool:
        return self.cluster.running_pid() is not None

    def stop_db(self, progress: Progress, *, immediate: bool = False) -> None:
        progress.step("Stopping PostgreSQL")
        self.cluster.stop(mode="immediate" if immediate else "fast")

    def start_db(self, progress: Progress, *, timeout: int) -> None:
        progress.step("Starting PostgreSQL")
        self.cluster.write_config(self.config)
        self.cluster.start(timeout=timeout)

    def stop_services(self, services: Sequence[str], progress: Progress) -> None:
        """A bare cluster has no other services."""

    def start_services(self, services: Sequence[str], progress: Progress) -> None:
        """A bare cluster has no other services."""


class LocalStackSite(ClusterSite):
    """The local runtime's cluster and services."""

    def __init__(self, stack: LocalStack) -> None:
        super().__init__(stack.cluster, stack.pg_config(), redis_data=stack.redis.data_dir)
        self.stack = stack

    def running_writers(self) -> list[str]:
        states = self.stack.states()
        return [s for s in WRITERS if states.get(s) and states[s].state in ("running", "starting")]

    def stop_services(self, services: Sequence[str], progress: Progress) -> None:
        if services:
            self.stack.stop(list(services), progress)

    def start_services(self, services: Sequence[str], progress: Progress) -> None:
        """Start them and wait until each serves (as `up` does): a restore that ends well leaves
        a serving stack."""
        if services:
            self.stack.start(list(services), progress)
            progress.step(f"Waiting for {', '.join(services)}")
            wait_healthy(self.stack, self.stack.settings, list(services), progress)

    def service_running(self, service: str) -> bool:
        state = self.stack.states().get(service)
        return state is not None and state.state in ("running", "starting")


class ComposeJobSite(Site):
    """Inside a compose restore job: the data volume is mounted at the path the server uses
    (BACKUP_PGDATA_DIR), so paths written into the restored configuration hold for the server;
    services are stopped and started by the host."""

    def __init__(self, settings: Settings, host: HostChannel) -> None:
        pgdata = settings.get_str("BACKUP_PGDATA_DIR")
        if not pgdata:
            raise LlmobsError(
                "BACKUP_PGDATA_DIR is not set in this restore job",
                hint="restore jobs run from the compose file's `restore` service",
            )
        self.settings = settings
        self.host = host
        self.pgdata = Path(pgdata)
        # The Redis and Grafana volumes, where the restore service mounts them.
        self.redis_data = _path_setting(settings, "BACKUP_REDIS_DATA_DIR")
        self.grafana_data = _path_setting(settings, "BACKUP_GRAFANA_DATA_DIR")
        # Beside the data directory, in the volume the server mounts at the same place.
        self.server_wal_cache = self.pgdata.with_name(self.pgdata.name + ".wal-cache")

    @property
    def log_hint(self) -> str:
        return "see `llmobs logs timescaledb`"

    def binaries(self) -> PgBinaries:
        try:
            major = int((self.pgdata / "PG_VERSION").read_text().split(".")[0])
        except (OSError, ValueError):
            major = None
        return binaries_for(self.settings, major)

    def _states(self) -> dict[str, str]:
        return dict(self.host.request("states"))

    def db_running(self) -> bool:
        return self.service_running(DB_SERVICE)

    def service_running(self, service: str) -> bool:
        return self._states().get(service) in ("running", "starting")

    def running_writers(self) -> list[str]:
        states = self._states()
        return [s for s in WRITERS if states.get(s) in ("running", "starting")]

    def stop_db(self, progress: Progress, *, immediate: bool = False) -> None:
        progress.step("Stopping PostgreSQL")
        self.host.request("stop", services=[DB_SERVICE])

    def start_db(self, progress: Progress, *, timeout: int) -> None:
        """Started without waiting for its healthcheck (a long recovery would fail it); this
        waits until it accepts connections, as pg_ctl -w does."""

        progress.step("Starting PostgreSQL")
        self.host.request("start", services=[DB_SERVICE], wait=False)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with admin_connection(self.settings, dbname="postgres"):
                    return
            except LlmobsError as exc:
                error = exc
            if time.monotonic() > deadline or not self.db_running():
                raise LlmobsError(f"PostgreSQL does not accept connections: {error.message}", hint=self.log_hint)
            time.sleep(0.5)

    def stop_services(self, services: Sequence[str], progress: Progress) -> None:
        if services:
            progress.step(f"Stopping {', '.join(services)}")
            self.host.request("stop", services=list(services))

    def start_services(self, services: Sequence[str], progress: Progress) -> None:
        if services:
            progress.step(f"Starting {', '.join(services)}")
            self.host.request("start", services=list(services), wait=True)


def _path_setting(settings: Settings, name: str) -> Path | None:
    value = settings.get_str(name)
    return Path(value) if value else None


#: profile `ha`: the node whose volume restore jobs mount at BACKUP_PGDATA_DIR (it becomes the
#: leader); every other node's volume is at BACKUP_REPLICAS_DIR/NODE, and it is cloned anew
HA_RESTORED_NODE = "db-1"
#: beside the data directory: what Patroni's bootstrap method `llmobs_restore` (compose/ha/)
#: moves into place when it finds the data directory empty
RESTORED_SUFFIX = ".restored"


class HaComposeJobSite(ComposeJobSite):
    """Inside a compose restore job of the `ha` profile, the way Patroni documents a restore:
    every node stops and the cluster is removed from etcd (`patronictl remove`); the restored
    data directory waits beside db-1's empty one, and db-1 bootstraps a new cluster from it
    (bootstrap ``method: llmobs_restore``, keeping the recovery settings: PostgreSQL replays WAL
    up to the target and promotes, then Patroni takes the leader lock). Once it is checked, the
    other nodes' data is removed and they start empty, so Patroni clones them from the new
    leader, and the restore waits until each streams and one is the synchronous standby."""

    timelines_from_failovers = True

    def __init__(self, settings: Settings, host: HostChannel) -> None:
        super().__init__(settings, host)
        self.replicas_dir = Path(settings.get_str("BACKUP_REPLICAS_DIR"))
        self.restored = self.pgdata.with_name(self.pgdata.name + RESTORED_SUFFIX)
        self._replica_nodes: list[str] | None = None

    @property
    def log_hint(self) -> str:
        return f"see `llmobs logs {HA_RESTORED_NODE}` and `llmobs status`"

    def live_timeline(self) -> int | None:
        """The leader's timeline (db-1's data directory may be a replica's, behind it)."""
        try:
            with admin_connection(self.settings, dbname="postgres") as conn:
                row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        except LlmobsError:
            return super().live_timeline()
        return int(row[0][:8], 16) if row else None

    def db_running(self) -> bool:
        """Whether the cluster runs: any of its nodes. db-1 alone is not the answer: a failover
        may have left it stopped while another node leads (the restore must then close the WAL
        segment first, and leave the cluster running afterwards)."""
        return any(self.service_running(node) for node in (HA_RESTORED_NODE, *self.replica_nodes()))

    def replica_nodes(self) -> list[str]:
        """The configured nodes other than db-1 (db-2, and db-3 with HA_NODES=3); asked of the
        host once."""
        if self._replica_nodes is None:
            self._replica_nodes = [n for n in self.host.request("ha-nodes") if n != HA_RESTORED_NODE]
        return self._replica_nodes

    def stop_db(self, progress: Progress, *, immediate: bool = False) -> None:
        # Every node: one left running could take the leader lock with the old data once the
        # cluster is gone from etcd.
        nodes = [HA_RESTORED_NODE, *self.replica_nodes()]
        progress.step(f"Stopping the Patroni nodes {', '.join(nodes)} and removing the cluster from etcd")
        self.host.request("stop", services=nodes)
        self.host.request("ha-forget-cluster")

    def install_restored(self, staging: Path) -> None:
        shutil.rmtree(self.restored, ignore_errors=True)
        os.rename(staging, self.restored)

    def start_db(self, progress: Progress, *, timeout: int) -> None:
        """With a restored directory waiting: db-1 alone, which bootstraps from it (recovery is
        waited for by the caller, through the write port, which reaches db-1 once it leads).
        Without one (a restore rolled back, the previous data in place): both nodes, which resume
        as a cluster with the data they had."""
        if self.restored.exists() and self.pgdata.exists():
            shutil.rmtree(self.restored)  # rolled back: the restored copy was never taken in
        self.host.request("ha-forget-cluster")  # a failed bootstrap may have left its keys
        nodes = [HA_RESTORED_NODE] if self.restored.exists() else [HA_RESTORED_NODE, *self.replica_nodes()]
        progress.step(f"Starting {', '.join(nodes)}")
        self.host.request("start", services=nodes, wait=False)
        deadline = time.monotonic() + timeout
        while not self.service_running(HA_RESTORED_NODE):
            if time.monotonic() > deadline:
                raise LlmobsError(f"{HA_RESTORED_NODE} did not start", hint=self.log_hint)
            time.sleep(0.5)

    def after_restore(self, progress: Progress) -> None:
        """Clone every other node from the restored leader: their previous data (copies of the
        cluster before the restore; db-1's is kept aside) is removed, and Patroni re-creates them
        with pg_basebackup. Waits until each streams on the leader's timeline and one is the
        synchronous standby; LlmobsError after BACKUP_RESTORE_TIMEOUT_SECONDS (the restored
        leader stands and serves meanwhile)."""
        replicas = self.replica_nodes()
        progress.step(f"Re-creating {', '.join(replicas)} from the restored leader")
        for node in replicas:
            shutil.rmtree(self.replicas_dir / node / self.pgdata.name, ignore_errors=True)
        self.host.request("start", services=replicas, wait=False)
        deadline = time.monotonic() + self.settings.get_int("BACKUP_RESTORE_TIMEOUT_SECONDS")
        members: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            try:
                members = list(self.host.request("ha-members"))
            except LlmobsError:
                members = []
            if _restored_cluster_ready(members, replicas):
                progress.done(f"{', '.join(replicas)} cloned; the synchronous standby streams again")
                return
            time.sleep(1)
        raise LlmobsError(
            f"{', '.join(replicas)} did not all stream from the restored leader: {members}",
            hint=f"the restored data is in place and serves; see `llmobs logs {replicas[0]}`",
        )


def _restored_cluster_ready(members: list[dict[str, object]], replicas: list[str]) -> bool:
    """A leader, every node of ``replicas`` streaming on its timeline, one of them synchronous."""
    leader = next((m for m in members if m.get("role") == "leader"), None)
    if leader is None:
        return False
    following = [
        m
        for m in members
        if m.get("name") in replicas
        and m.get("state") in ("running", "streaming")
        and m.get("timeline") == leader.get("timeline")
    ]
    return len(following) == len(replicas) and any(m.get("synchronous") for m in following)
