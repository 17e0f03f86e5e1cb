"""The `ha` profile in the compose runtime on a real Docker engine (offline images built from
Debian's packages): PostgreSQL under Patroni on db-1 and db-2 with synchronous replication, etcd,
and db-proxy (HAProxy) in front. Under steady OTLP ingest, `docker kill` of the leader gives a new
leader within 30 s; meanwhile the collector answers 503 with Retry-After and recovers by itself;
afterwards every span it acknowledged is stored, and only a request retried after a 503 (whose
first attempt may have committed as the leader died) may be stored twice. Then the killed node rejoins as a replica
and `llmobs switchover` swaps the roles while API reads go on without a failure. The second test
starts whatever the first left stopped, so it also runs alone. The last test hands the leader
to a named node with `llmobs failover --to`."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from helpers.collector import LoadThreads, otlp_request
from helpers.compose import (
    Project,
    docker,
    read_trace,
    send_trace,
    span_names,
    stack_up,
)

pytestmark = pytest.mark.slow

NODES = ("db-1", "db-2")
#: what the issue allows between losing the leader and a new one
FAILOVER_LIMIT_S = 30
PGDATA = "/var/lib/postgresql/data/pgdata"
#: the node the failover test killed, for the test that checks how it rejoined
killed: list[str] = []


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    # the api's trace list, search and metrics read from the replicas (test_api_reads...)
    with stack_up("--runtime", "compose", "--profile", "ha", env={"API_READ_FROM_REPLICA": "true"}) as proj:
        yield proj


def cluster(project: Project, node: str) -> dict | None:
    """Patroni's view of the cluster (GET /cluster on ``node``'s REST API), or None when the
    node does not answer."""
    containers = project.containers(node)
    if not containers:
        return None
    proc = docker(
        "exec", containers[0]["Id"], "wget", "-q", "-O", "-", "http://127.0.0.1:8008/cluster", check=False, timeout=20
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def roles(view: dict) -> dict[str, str]:
    return {m["name"]: m["role"] for m in view.get("members", [])}


class HttpLoad(LoadThreads):
    """Client threads posting OTLP/HTTP requests of 20 new spans each to the published port.
    They keep the span ids of every acknowledged (200) request; on a 503 they note its
    Retry-After and send the same request again, as the SDK exporters do; anything else is a
    failure."""

    def __init__(self, url: str, token: str, threads: int = 3, first_worker: int = 0) -> None:
        super().__init__(threads)
        self.url, self.token = url, token
        #: ids are made from the worker's number: another load on the same stack starts higher
        self.first_worker = first_worker
        self.unavailable: list[tuple[float, str | None]] = []
        #: span ids of acknowledged requests that had been answered 503 before: an attempt
        #: answered 503 may still have committed (the leader died before it could answer), so
        #: the retry contract (at least once) allows these to be stored twice
        self.retried: set[str] = set()

    def _run(self, worker: int) -> None:
        headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=20) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                w = self.first_worker + worker + 1
                span_ids = [f"{w:04x}{n:08x}{i:04x}" for i in range(20)]
                body = otlp_request([{"trace_id": f"{w:08x}{n:024x}", "span_id": s} for s in span_ids])
                attempts = 0
                while not self._stop.is_set():
                    attempts += 1
                    try:
                        response = client.post(f"{self.url}/v1/traces", content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                        return
                    if response.status_code == 200:
                        self.acked.append((time.monotonic(), span_ids))
                        if attempts > 1:
                            self.retried.update(span_ids)
                        break
                    if response.status_code == 503:
                        self.unavailable.append((time.monotonic(), response.headers.get("retry-after")))
                        time.sleep(0.2)
                        continue
                    self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    return
                time.sleep(0.02)


def test_killing_the_leader_fails_over_and_loses_no_acknowledged_span(project: Project):
    _code, status = project.status()
    states = {s["name"]: s for s in status["services"]}
    for name in ("etcd", *NODES, "db-proxy", "collector", "api"):
        assert states[name]["state"] == "running", states[name]
    assert states["timescaledb"]["state"] == "not available"

    view = cluster(project, "db-1")
    assert view is not None
    before = roles(view)
    leader = next(name for name, role in before.items() if role == "leader")
    (standby,) = [n for n in NODES if n != leader]
    # synchronous_mode: the other node is the synchronous standby, the only one Patroni promotes
    assert before[standby] == "sync_standby", before

    (collector,) = project.containers("collector")
    url = f"http://127.0.0.1:{project.port('COLLECTOR_HTTP_PORT')}"
    with HttpLoad(url, project.env["LLMOBS_INGEST_API_KEY"]) as load:
        time.sleep(3)
        acked_before_kill = len(load.acked)
        (leader_container,) = project.containers(leader)
        killed_at = time.monotonic()
        docker("kill", leader_container["Id"])
        killed.append(leader)

        new_leader_after: float | None = None
        while time.monotonic() - killed_at < FAILOVER_LIMIT_S + 30:
            view = cluster(project, standby)
            if view and roles(view).get(standby) == "leader":
                new_leader_after = time.monotonic() - killed_at
                break
            time.sleep(0.5)
        assert new_leader_after is not None, f"no new leader {FAILOVER_LIMIT_S + 30} s after the kill"

        # ingest comes back without anyone touching the collector
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(t > killed_at + new_leader_after for t, _ in load.acked):
            time.sleep(0.5)
        time.sleep(2)

    outage_503s = sum(1 for t, _ in load.unavailable if t >= killed_at)
    print(
        f"\nha failover: new leader after {new_leader_after:.1f} s, {outage_503s} answers 503, "
        f"{len(load.acked)} acknowledged requests"
    )
    assert acked_before_kill > 0
    assert not load.failures, load.failures[:5]
    assert new_leader_after <= FAILOVER_LIMIT_S, f"new leader after {new_leader_after:.1f} s"
    assert any(t > killed_at + new_leader_after for t, _ in load.acked), "ingest did not recover"
    outage = [retry_after for t, retry_after in load.unavailable if t >= killed_at]
    assert outage, "the collector never answered 503 while there was no leader"
    assert all(retry_after for retry_after in outage), "a 503 without Retry-After"
    (collector_after,) = project.containers("collector")
    assert collector_after["Id"] == collector["Id"] and collector_after["RestartCount"] == 0

    acked = load.acked_ids()
    rows = project.sql("SELECT span_id, count(*) FROM spans WHERE span_id = ANY(%s) GROUP BY span_id", (list(acked),))
    stored = {span_id: n for span_id, n in rows}
    missing = acked - stored.keys()
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged spans were lost"
    twice = {span_id for span_id, n in stored.items() if n > 1}
    print(f"ha failover: {len(acked)} acknowledged spans, {len(twice)} stored twice (all retried after a 503)")
    assert twice <= load.retried, f"{len(twice - load.retried)} spans acknowledged at the first attempt stored twice"
    assert all(n <= 2 for n in stored.values())


def ha_facts(project: Project) -> dict:
    _code, status = project.status()
    return status["facts"].get("ha") or {}


def settled_cluster(project: Project) -> dict:
    """`status` facts of the cluster once every node runs on the leader's timeline with a
    synchronous standby (within 120 s)."""

    def settled() -> dict | None:
        found = ha_facts(project)
        members = found.get("members") or []
        # Patroni 3.0 says "running" of a replica that streams, later versions "streaming"
        replicas_up = all(m["state"] in ("running", "streaming") for m in members)
        timelines = {m["timeline"] for m in members}
        synced = [m for m in members if m["synchronous"]]
        return found if len(members) == 2 and replicas_up and len(timelines) == 1 and synced else None

    deadline = time.monotonic() + 120
    while (found := settled()) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert found is not None, (
        f"the cluster did not settle with a synchronous standby on the leader's timeline: {ha_facts(project)}"
    )
    return found


def node_sql(project: Project, node: str, statement: str) -> str:
    """``statement``'s output (psql -At) as postgres on ``node`` itself (its local socket)."""
    (container,) = project.containers(node)
    proc = docker(
        "exec", "-u", "postgres", container["Id"], "psql", "-d", project.env.get("DB_NAME", "llm_observatory"),
        "-Atc", statement, check=False, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_old_leader_rejoins_and_a_switchover_fails_no_api_read(project: Project):
    # The node the previous test killed (if it ran) comes back as a replica: Patroni rewinds it.
    project.cli("up", "--runtime", "compose", "--profile", "ha")
    found = settled_cluster(project)
    assert found["etcd"] == "healthy"
    if killed:
        # It rejoined through pg_rewind: pg_rewind leaves a backup_label ("BACKUP METHOD:
        # pg_rewind") that PostgreSQL renames to backup_label.old when it starts from it. The node
        # led since the cluster's bootstrap (initdb), so no base backup left one before.
        (container,) = project.containers(killed[0])
        label = docker("exec", container["Id"], "cat", f"{PGDATA}/backup_label.old", check=False)
        assert "BACKUP METHOD: pg_rewind" in label.stdout, (label.stdout, label.stderr)
    (leader,) = [m for m in found["members"] if m["role"] == "leader"]
    (standby,) = [m for m in found["members"] if m["role"] == "replica"]
    _code, status = project.status()
    rows = {s["name"]: s for s in status["services"]}
    assert rows[leader["name"]]["role"] == "leader" and rows[standby["name"]]["role"] == "replica"

    failures: list[str] = []
    reads = 0
    stop = time.monotonic() + 3600

    def read_loop() -> None:
        nonlocal reads
        with project.api() as client:
            while time.monotonic() < stop:
                try:
                    response = client.get("/api/v1/traces", params={"limit": 5})
                    if response.status_code != 200:
                        failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                reads += 1
                time.sleep(0.05)

    reader = threading.Thread(target=read_loop, daemon=True)
    reader.start()
    time.sleep(2)
    proc = project.cli("switchover", check=False)
    time.sleep(2)
    stop = 0
    reader.join(timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nswitchover: {reads} API reads, {len(failures)} failed")

    after = ha_facts(project)
    roles_after = {m["name"]: m["role"] for m in after["members"]}
    assert roles_after == {standby["name"]: "leader", leader["name"]: "replica"}
    if failures:
        (api,) = project.containers("api")
        api_log = docker("logs", "--tail", "40", api["Id"], check=False)
        pytest.fail(f"{len(failures)} API reads failed: {failures[:5]}\napi log:\n{api_log.stdout}{api_log.stderr}")


def test_api_list_reads_go_to_a_replica_and_a_write_is_read_back_at_once(project: Project):
    """API_READ_FROM_REPLICA (set for this module): the trace list runs on a replica (db-proxy's
    read port); a span the caller just wrote is read back by id from the leader at once."""
    found = settled_cluster(project)
    (leader,) = [m["name"] for m in found["members"] if m["role"] == "leader"]
    (replica,) = [m["name"] for m in found["members"] if m["role"] == "replica"]
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    span = {"trace_id": trace_id, "span_id": span_id, "name": "ha-read", "start_time": datetime.now(UTC).isoformat()}
    with project.api() as client:
        written = client.post("/api/v1/spans", json=span)
        assert written.status_code == 201, written.text
        read_back = client.get(f"/api/v1/spans/{span_id}")
        assert read_back.status_code == 200, read_back.text
        # The list comes from the replica: it shows the trace once replay got there (milliseconds).
        # Right after the previous test's switchover the api may still send such reads to the
        # leader (for REPLICA_RETRY_AFTER after a replica failed one), so read until one of them
        # shows on the replica.
        reading = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'llmobs-api-replica'"
        deadline = time.monotonic() + 30
        listed: list[str] = []
        on_replica = 0
        while (trace_id not in listed or on_replica < 1) and time.monotonic() < deadline:
            response = client.get("/api/v1/traces", params={"limit": 20})
            assert response.status_code == 200, response.text
            listed = [t["trace_id"] for t in response.json()["traces"]]
            on_replica = int(node_sql(project, replica, f"{reading} AND query ILIKE '%spans%'"))
            time.sleep(0.2)
        assert trace_id in listed
    assert on_replica >= 1, "no api read from the replica"
    assert node_sql(project, replica, "SELECT pg_is_in_recovery()") == "t"
    assert int(node_sql(project, leader, reading)) == 0, "the api's replica pool reached the leader"


def test_rotating_ha_secrets_keeps_replication_and_switchover(project: Project):
    """`llmobs secrets rotate ha`: the replicas stream again with the new replication password (a
    synchronous standby is back), `llmobs switchover` works with the new REST password, the old
    one is refused, and neither value shows in a log or the command's output."""
    settled_cluster(project)
    old = {k: project.env[k] for k in ("DB_REPLICATION_PASSWORD", "PATRONI_REST_PASSWORD")}
    proc = project.cli("secrets", "rotate", "ha", "--yes")
    new = {k: project.env[k] for k in old}
    assert all(new[k] != old[k] for k in old), "the secrets did not change"

    found = settled_cluster(project)
    (leader,) = [m["name"] for m in found["members"] if m["role"] == "leader"]
    (standby,) = [m["name"] for m in found["members"] if m["role"] == "replica"]
    # the standby logged in again since the rotation began (the step ended its walsender)
    streaming = node_sql(
        project, leader, f"SELECT state, sync_state FROM pg_stat_replication WHERE application_name = '{standby}'"
    )
    assert streaming == "streaming|sync", streaming

    def rest_status(node: str, password: str) -> int:
        (container,) = project.containers(node)
        script = (
            "import base64, sys, urllib.error, urllib.request\n"
            "token = base64.b64encode(('patroni:' + sys.stdin.read().strip()).encode()).decode()\n"
            "req = urllib.request.Request('http://127.0.0.1:8008/reload', method='POST', "
            "headers={'Authorization': 'Basic ' + token})\n"
            "try:\n    print(urllib.request.urlopen(req, timeout=20).status)\n"
            "except urllib.error.HTTPError as exc:\n    print(exc.code)\n"
        )
        out = docker("exec", "-i", container["Id"], "python3", "-c", script, input=password.encode(), timeout=30)
        return int(out.stdout.strip())

    for node in NODES:
        assert rest_status(node, old["PATRONI_REST_PASSWORD"]) == 401
        assert rest_status(node, new["PATRONI_REST_PASSWORD"]) == 202

    project.cli("switchover")
    after = settled_cluster(project)
    assert {m["name"]: m["role"] for m in after["members"]} == {standby: "leader", leader: "replica"}

    logs = proc.stdout + proc.stderr
    for service in (*NODES, "etcd", "db-proxy"):
        (container,) = project.containers(service)
        out = docker("logs", container["Id"], check=False)
        logs += out.stdout + out.stderr
    leaked = [k for k in old if old[k] in logs or new[k] in logs]
    assert not leaked, f"{leaked} in a log or the command's output"


def test_rotating_db_secrets_keeps_patroni_managing_every_node(project: Project):
    """`llmobs secrets rotate db` on the live cluster: the roles change on the leader, Patroni on
    every node logs in with the new superuser password (it manages its PostgreSQL: a switchover
    works and the old leader comes back as the synchronous standby), ingest and API reads go on,
    the old password is refused, and no password shows in the command's output or a log."""
    import psycopg

    before = settled_cluster(project)
    (leader_before,) = [m["name"] for m in before["members"] if m["role"] == "leader"]
    names = ("DB_PASSWORD", "DB_READONLY_PASSWORD", "DB_APP_PASSWORD")
    old = {k: project.env[k] for k in names}
    ((rotation_began,),) = project.sql("SELECT now()::text")
    (proxy,) = project.containers("db-proxy")

    def leader_marked_down() -> int:
        """How often db-proxy has marked the leader down on its write port so far (its log)."""
        out = docker("logs", proxy["Id"], check=False)
        return (out.stdout + out.stderr).count(f"Server primary/{leader_before} is DOWN")

    downs_before = leader_marked_down()
    url = f"http://127.0.0.1:{project.port('COLLECTOR_HTTP_PORT')}"
    # steady OTLP ingest all through the rotation (ids apart from the failover test's)
    with HttpLoad(url, project.env["LLMOBS_INGEST_API_KEY"], threads=2, first_worker=100) as load:
        started = time.monotonic()
        proc = project.cli("secrets", "rotate", "db", "--yes")
        rotated_in = time.monotonic() - started
    print(
        f"\nsecrets rotate db (ha): {rotated_in:.1f} s, {len(load.acked)} requests acknowledged meanwhile, "
        f"{len(load.unavailable)} answers 503 (retried)"
    )
    assert not load.failures, load.failures[:5]
    # the write port never lost the leader; a replacement collector may answer 503 (retryable,
    # with Retry-After) in the instant before its first database connection, as in the
    # single-node rotation (tests/secrets/test_secrets_zero_downtime.py)
    assert leader_marked_down() == downs_before, "db-proxy marked the leader down during the rotation"
    assert all(retry_after for _, retry_after in load.unavailable), "a 503 without Retry-After"
    acked = load.acked_ids()
    assert acked
    ((stored,),) = project.sql("SELECT count(DISTINCT span_id) FROM spans WHERE span_id = ANY(%s)", (list(acked),))
    assert stored == len(acked), f"{len(acked) - stored} acknowledged spans not stored"
    new = {k: project.env[k] for k in names}
    assert all(new[k] != old[k] for k in names), "the secrets did not change"
    assert "Patroni" in proc.stdout + proc.stderr, "the rotation did not reload Patroni's credentials"

    found = settled_cluster(project)
    (leader,) = [m["name"] for m in found["members"] if m["role"] == "leader"]
    (standby,) = [m["name"] for m in found["members"] if m["role"] == "replica"]
    # Patroni's own connection on each node started after the rotation began: it logged in with
    # the new password (the old one no longer works for postgres)
    patroni_sessions = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'Patroni' "
        f"AND backend_start > '{rotation_began}'"
    )
    for node in NODES:
        assert int(node_sql(project, node, patroni_sessions)) >= 1, node
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=project.port("DB_PORT"), user="postgres", password=old["DB_PASSWORD"],
            dbname=project.env["DB_NAME"], connect_timeout=10,
        ).close()  # fmt: skip
    assert project.sql("SELECT 1") == [(1,)]

    # ingest and API reads with the new app credentials
    trace_id = send_trace(project, "after-db-rotation")
    assert "after-db-rotation" in span_names(read_trace(project, trace_id))

    # Patroni still manages both nodes: the leader hands over and comes back as the standby
    # (its PostgreSQL restarted, Patroni reconnected as postgres with the new password)
    project.cli("switchover")
    after = settled_cluster(project)
    assert {m["name"]: m["role"] for m in after["members"]} == {standby: "leader", leader: "replica"}
    trace_id = send_trace(project, "after-db-rotation-switchover")
    assert "after-db-rotation-switchover" in span_names(read_trace(project, trace_id))

    logs = proc.stdout + proc.stderr
    for service in (*NODES, "etcd", "db-proxy", "api", "collector"):
        for container in project.containers(service):
            out = docker("logs", container["Id"], check=False)
            logs += out.stdout + out.stderr
    leaked = [k for k in names if old[k] in logs or new[k] in logs]
    assert not leaked, f"{leaked} in a log or the command's output"


def test_a_manual_failover_hands_the_leader_to_the_named_node(project: Project):
    """`llmobs failover --to NODE` makes NODE lead through Patroni (POST /failover), the other node
    follows it as the synchronous standby and writes reach it; naming the node that already leads,
    or a node that does not exist, is a usage error (exit 2) that changes nothing."""
    found = settled_cluster(project)
    (leader,) = [m["name"] for m in found["members"] if m["role"] == "leader"]
    (replica,) = [m["name"] for m in found["members"] if m["role"] == "replica"]

    proc = project.cli("failover", "--to", replica, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{replica} leads" in proc.stdout + proc.stderr
    after = settled_cluster(project)
    assert {m["name"]: m["role"] for m in after["members"]} == {replica: "leader", leader: "replica"}
    trace_id = send_trace(project, "after-manual-failover")
    assert "after-manual-failover" in span_names(read_trace(project, trace_id))

    again = project.cli("failover", "--to", replica, check=False)
    assert again.returncode == 2, again.stdout + again.stderr
    assert f"{replica} is already the leader" in again.stdout + again.stderr
    unknown = project.cli("failover", "--to", "db-9", check=False)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "unknown node 'db-9'" in unknown.stdout + unknown.stderr
    assert {m["name"]: m["role"] for m in ha_facts(project)["members"]} == {replica: "leader", leader: "replica"}
