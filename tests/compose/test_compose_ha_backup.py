"""Backups and restores of the `ha` profile on a real Docker engine (offline images), one stack
for the module, the tests in order (each starts from what the previous one left):

1. a physical backup read from the replica (`llmobs backup --from-replica`); `docker kill` of the
   leader (db-1, after a switchover to it when needed: the restores then find db-1 stopped) and
   Patroni's failover; WAL archiving continues from the new leader (the new timeline's history
   and segments reach the archive) and `llmobs backup verify --all` passes;
2. `llmobs restore --to T`, T before the failover: the spans stored are exactly those the
   collector acknowledged before T; the restore bootstraps the Patroni cluster from the restored
   leader and clones the other node (the killed one too), which is the synchronous standby
   again; ingest works;
3. `llmobs restore --to T2`, T2 on the failover's timeline (before the first restore):
   the spans acknowledged before T2, from the same base backup on the timeline before it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from helpers.collector import otlp_request
from helpers.compose import Project, docker, stack_up

pytestmark = pytest.mark.slow

#: what the tests hand on to the next ones (they run in order on one stack)
STATE: dict[str, object] = {}


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    with stack_up("--runtime", "compose", "--profile", "ha") as proj:
        yield proj


def ingest(project: Project, tag: int, requests: int = 3) -> set[str]:
    """``requests`` OTLP/HTTP requests of 10 new spans each; the span ids, once every request was
    acknowledged (a 503, while the stack settles, is retried as the SDK exporters do)."""
    url = f"http://127.0.0.1:{project.port('COLLECTOR_HTTP_PORT')}/v1/traces"
    headers = {
        "content-type": "application/x-protobuf",
        "authorization": f"Bearer {project.env['LLMOBS_INGEST_API_KEY']}",
    }
    acked: set[str] = set()
    with httpx.Client(timeout=20) as client:
        for n in range(requests):
            span_ids = [f"{tag:04x}{n:08x}{i:04x}" for i in range(10)]
            body = otlp_request([{"trace_id": f"{tag:08x}{n:024x}", "span_id": s} for s in span_ids])
            deadline = time.monotonic() + 90
            while True:
                try:
                    response = client.post(url, content=body, headers=headers)
                    if response.status_code == 200:
                        break
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                assert time.monotonic() < deadline, f"ingest not acknowledged: {last}"
                time.sleep(0.5)
            acked.update(span_ids)
    return acked


def stored(project: Project) -> set[str]:
    """The span ids of this module's spans (all tags) in the database."""
    every = set().union(*(s for k, s in STATE.items() if k.startswith("acked-")))  # type: ignore[arg-type]
    rows = project.sql("SELECT span_id FROM spans WHERE span_id = ANY(%s)", (list(every),))
    return {r[0] for r in rows}


def server_now(project: Project) -> object:
    return project.sql("SELECT clock_timestamp()")[0][0]


def wal_archive(project: Project) -> list[str]:
    """The files in the wal-archive volume, as a running node sees it."""
    node = (project.containers("db-1") or project.containers("db-2"))[0]
    return docker("exec", node["Id"], "ls", "/wal-archive").stdout.split()


def ha_members(project: Project) -> list[dict]:
    _code, status = project.status()
    return (status["facts"].get("ha") or {}).get("members") or []


def assert_leader_and_synchronous_standby(project: Project) -> None:
    members = ha_members(project)
    leaders = [m for m in members if m["role"] == "leader"]
    synced = [m for m in members if m["synchronous"] and m["state"] in ("running", "streaming")]
    assert len(leaders) == 1 and len(synced) == 1, members
    assert synced[0]["timeline"] == leaders[0]["timeline"], members


def test_backup_from_a_replica_and_wal_archiving_across_a_failover(project: Project):
    started = time.monotonic()
    # db-1 leads, so the failover below leaves db-1 (the node a restore bootstraps from) stopped:
    # the restores must still see a running cluster (CI once had db-1 lead by chance, and the
    # restore stopped the cluster again afterwards)
    if [m["name"] for m in ha_members(project) if m["role"] == "leader"] != ["db-1"]:
        project.cli("switchover", "--to", "db-1")
    STATE["acked-A"] = ingest(project, 0xA)
    backup = project.cli("backup", "--from-replica")
    assert "from a replica" in backup.stderr, backup.stderr
    base_id = backup.stdout.strip().splitlines()[-1]
    STATE["acked-A2"] = ingest(project, 0xA2)
    # T: everything acknowledged so far committed before it; nothing after it is
    STATE["T"] = server_now(project)
    time.sleep(0.2)

    # the leader dies: its last WAL segment is never archived whole by it (only the new leader's
    # `.partial` copy and the new timeline's segment that continues it are)
    (leader,) = [m["name"] for m in ha_members(project) if m["role"] == "leader"]
    (leader_container,) = project.containers(leader)
    docker("kill", leader_container["Id"])
    deadline = time.monotonic() + 90
    while not any(m["role"] == "leader" and m["name"] != leader for m in ha_members(project)):
        assert time.monotonic() < deadline, f"no new leader after killing {leader}: {ha_members(project)}"
        time.sleep(1)

    STATE["acked-B"] = ingest(project, 0xB)
    STATE["T2"] = server_now(project)
    time.sleep(0.2)
    STATE["acked-B2"] = ingest(project, 0xB2)
    # a backup from the new leader closes its WAL segment and waits for the archiver
    project.cli("backup")

    archived = wal_archive(project)
    timeline = next(m["timeline"] for m in ha_members(project) if m["role"] == "leader")
    assert f"{timeline:08X}.history" in archived, archived
    assert any(n.startswith(f"{timeline:08X}") and len(n) == 24 for n in archived), archived
    verified = project.cli("backup", "verify", "--all", "--json", check=False)
    results = [json.loads(line) for line in verified.stdout.splitlines() if line.startswith("{")]
    checked = [r for r in results if r.get("event") == "verified"]
    assert verified.returncode == 0 and all(r["ok"] for r in checked), verified.stdout
    # the base backup from the replica, on timeline 1: its WAL chain runs on across the switch
    (base,) = [r for r in checked if r["id"] == base_id]
    assert base["type"] == "physical", base
    assert stored(project) == STATE["acked-A"] | STATE["acked-A2"] | STATE["acked-B"] | STATE["acked-B2"]  # type: ignore[operator]
    print(f"\nha backup from replica + failover + archive checks: {time.monotonic() - started:.1f} s")


def test_pitr_before_the_failover_gives_exactly_what_was_committed_before_it(project: Project):
    if "T" not in STATE:
        pytest.skip("needs the previous test's data")
    started = time.monotonic()
    restored = project.cli("restore", "--to", STATE["T"].isoformat(), "--yes")  # type: ignore[attr-defined]
    print(f"\nha PITR restore before the failover: {time.monotonic() - started:.1f} s")
    assert "Re-creating db-2" in restored.stderr, restored.stderr
    assert stored(project) == STATE["acked-A"] | STATE["acked-A2"], restored.stderr  # type: ignore[operator]
    assert_leader_and_synchronous_standby(project)
    STATE["acked-C"] = ingest(project, 0xC)
    assert STATE["acked-C"] <= stored(project)  # type: ignore[operator]
    print(f"ha PITR restore + checks: {time.monotonic() - started:.1f} s")


def test_pitr_on_the_timeline_of_the_failover(project: Project):
    if "T2" not in STATE:
        pytest.skip("needs the first test's data")
    started = time.monotonic()
    project.cli("restore", "--to", STATE["T2"].isoformat(), "--yes")  # type: ignore[attr-defined]
    print(f"\nha PITR restore on the failover's timeline: {time.monotonic() - started:.1f} s")
    assert stored(project) == STATE["acked-A"] | STATE["acked-A2"] | STATE["acked-B"]  # type: ignore[operator]
    assert_leader_and_synchronous_standby(project)
    assert ingest(project, 0xD, requests=1)
