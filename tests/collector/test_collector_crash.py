"""Crash safety under continuous load: an acknowledged span is a stored span, whatever dies."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest

from llmobs.config import Settings, generate_password

from helpers.collector import LoadThreads, collector_env, grpc_export, launch, otlp_request
from helpers.common import PgServer, free_port, make_workdir, pg_os_user, settings_env

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


class Load(LoadThreads):
    """Client threads sending requests of 50 new spans each; they keep the span ids of every
    acknowledged request, count retryable errors, and retry those (as the SDK exporters do)."""

    def __init__(self, target: str, token: str, threads: int = 4, retry: bool = True) -> None:
        super().__init__(threads)
        self.target, self.token, self.retry = target, token, retry
        self.retryable = 0

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            span_ids = [f"{worker:04x}{n:08x}{i:04x}" for i in range(50)]
            body = otlp_request([{"trace_id": f"{worker:08x}{n:024x}", "span_id": s} for s in span_ids])
            while not self._stop.is_set():
                code, details, _ = grpc_export(self.target, body, self.token, timeout=20)
                if code == grpc.StatusCode.OK:
                    self.acked.append((time.monotonic(), span_ids))
                    break
                if code in RETRYABLE and self.retry:
                    self.retryable += 1
                    time.sleep(0.1)
                    continue
                if not self.retry:
                    return
                self.failures.append(f"{code}: {details}")
                return


def stored_ids(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT span_id FROM spans")}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_under_load_loses_no_acknowledged_span(pg_server, redis_server, db_name, workdir, admin_conn, workers):
    c = launch(
        collector_env(settings_env(pg_server, redis_server, db_name), COLLECTOR_WORKERS=workers),
        workdir / "collector.log",
    )
    try:
        with Load(c.grpc_target, c.token, retry=False) as load:
            time.sleep(3)
            c.kill()  # SIGKILL to the whole process group, mid-flight
    finally:
        c.kill()
    acked = load.acked_ids()
    assert len(acked) > 500
    missing = acked - stored_ids(admin_conn)
    assert not missing, f"{len(missing)} acknowledged spans were lost"


_CONTROLLER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from helpers.common import pg_os_user
from llmobs.stack.postgres import PgCluster
root = Path(sys.argv[1])
cluster = PgCluster(root / "data", log_file=root / "postgres.log", os_user=pg_os_user())
for line in sys.stdin:
    cluster.stop(mode="fast") if line.strip() == "stop" else cluster.start()
    print("ok", flush=True)
"""


class PgController:
    """Stops and starts the cluster from a process started before the load: forking the test
    process while its client threads are inside gRPC calls can crash the forked child."""

    def __init__(self, root) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CONTROLLER, str(root), str(Path(__file__).parents[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _do(self, command: str) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self._do("stop")

    def start(self) -> None:
        self._do("start")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture
def own_pg() -> Iterator[tuple[PgServer, PgController]]:
    """A PostgreSQL cluster for this test alone: it is restarted under load."""
    from llmobs.stack.postgres import PgCluster, PgConfig

    root = make_workdir("llmobs-pg-crash-")
    cluster = PgCluster(root / "data", log_file=root / "postgres.log", os_user=pg_os_user())
    cluster.prepare_dirs(root / "run")
    password = generate_password()
    cluster.init(password)
    port = free_port()
    cluster.write_config(PgConfig("127.0.0.1", port, root / "run", extra={"fsync": "off"}))
    cluster.start()
    controller = PgController(root)
    try:
        yield PgServer("127.0.0.1", port, password, generate_password(), generate_password(), cluster), controller
    finally:
        controller.close()
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_restart_under_load(own_pg, redis_server, workdir):
    from llmobs.store.bootstrap import bootstrap
    from llmobs.store.db import connect

    pg, controller = own_pg
    env = settings_env(pg, redis_server, "crashdb")
    bootstrap(Settings(env, None))
    c = launch(collector_env(env), workdir / "collector.log")
    try:
        with Load(c.grpc_target, c.token) as load:
            time.sleep(2)
            controller.stop()
            stopped = time.monotonic()
            time.sleep(2)
            assert c.health()[0] == 503
            controller.start()
            restarted = time.monotonic()
            time.sleep(4)
        assert c.proc.poll() is None  # the same process carried on
        assert c.health()[0] == 200
    finally:
        c.stop()
    assert not load.failures, load.failures[:3]
    assert load.retryable > 0, "clients never saw a retryable error while the database was down"
    assert any(t > restarted for t, _ in load.acked), "ingestion did not resume after the restart"
    assert not any(stopped + 0.5 < t < restarted for t, _ in load.acked)
    with connect(Settings(env, None), "admin") as conn:
        missing = load.acked_ids() - stored_ids(conn)
    assert not missing, f"{len(missing)} acknowledged spans were lost"
    assert "database unavailable" in c.logs()
