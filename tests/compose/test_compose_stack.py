"""The compose runtime end to end on a real Docker engine, through the real CLI.

One project for the module (its own COMPOSE_PROJECT_NAME and free ports), used in order:
up -> healthy and hardened -> an OTLP trace in through the published collector port and back out
through the published API port -> backups in one-off containers (and a second one at once exits
3) -> a point-in-time restore in a restore job -> a restore whose job is killed, and one whose
llmobs is killed (undone by `up`) -> a logical restore -> scale out and traffic on every replica
-> scale in -> down keeps the volumes -> up finds the data -> down --volumes removes them (only
this project's). Restores run in the same stack, one after the other, to keep the Docker part
of the suite short.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from helpers.common import run_cli
from helpers.compose import (
    Project,
    docker,
    new_project,
    project_volumes,
    read_trace,
    remove_compose_project,
    send_trace,
    span_names,
)

pytestmark = pytest.mark.slow

APP_SERVICES = ("api", "collector")


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    proj = new_project()
    try:
        yield proj
    finally:
        run_cli("down", "--volumes", "--yes", project_dir=proj.root, timeout=300)
        remove_compose_project(proj.name)


def test_up_starts_every_service_healthy(project: Project):
    started = time.monotonic()
    project.cli("up", "--runtime", "compose")
    _, status = project.status()
    assert status["runtime"] == "compose"
    states = {s["name"]: s for s in status["services"]}
    for name in ("timescaledb", "redis", *APP_SERVICES):
        assert states[name]["state"] == "running" and states[name]["health"] == "healthy", states[name]
    print(f"up (images built): {time.monotonic() - started:.1f} s")
    # A second `up` changes nothing and succeeds.
    ids = sorted(c["Id"] for c in project.containers())
    project.cli("up")
    assert sorted(c["Id"] for c in project.containers()) == ids


def test_containers_are_hardened_and_hold_no_secret(project: Project):
    secrets = [
        v
        for k, v in project.env.items()
        if v
        and k
        in {
            "DB_PASSWORD",
            "DB_APP_PASSWORD",
            "DB_READONLY_PASSWORD",
            "REDIS_PASSWORD",
            "SECRET_KEY",
            "LLMOBS_ADMIN_API_KEY",
            "LLMOBS_INGEST_API_KEY",
        }
    ]
    by_service = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in project.containers()}
    assert {"timescaledb", "redis", "api", "collector", "proxy"} <= set(by_service)
    for service, c in by_service.items():
        host = c["HostConfig"]
        visible = json.dumps([c["Config"]["Env"], c["Config"]["Cmd"], c["Config"]["Entrypoint"], c["Args"]])
        assert not any(s in visible for s in secrets), f"a secret is visible in docker inspect of {service}"
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert "ALL" in host["CapDrop"], service
        assert host["LogConfig"]["Config"].get("max-size"), service
        for bindings in (host["PortBindings"] or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings), service
        if service in ("api", "collector", "proxy", "redis"):
            assert host["ReadonlyRootfs"] is True, service
            assert c["Config"]["User"] and not c["Config"]["User"].startswith("0"), service
        if service in APP_SERVICES:
            assert host["Init"] is True and c["Config"]["User"] == "1001:1001", service
    # api and collector publish nothing themselves: the proxy does.
    assert not by_service["api"]["HostConfig"]["PortBindings"]
    # Redis: the default user is off, the ACL user needs the password.
    import redis

    port = project.port("REDIS_PORT")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, password="wrong", username=project.env["REDIS_USER"]).ping()
    assert redis.Redis(port=port, username=project.env["REDIS_USER"], password=project.env["REDIS_PASSWORD"]).ping()


def test_otlp_trace_goes_in_through_the_collector_and_out_through_the_api(project: Project):
    trace_id = send_trace(project, "compose e2e chat")
    assert "compose e2e chat" in span_names(read_trace(project, trace_id))
    (project.root / "first-trace").write_text(trace_id)
    # the maintenance service folds it into the rollups that status, metrics and Grafana read
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and project.status()[1]["facts"].get("spans_last_hour", 0) < 1:
        time.sleep(1)
    assert project.status()[1]["facts"]["spans_last_hour"] >= 1


def test_wal_is_archived_into_the_volume(project: Project):
    import psycopg

    env = project.env
    with psycopg.connect(
        host="127.0.0.1",
        port=project.port("DB_PORT"),
        user="postgres",
        password=env["DB_PASSWORD"],
        dbname=env["DB_NAME"],
        autocommit=True,
    ) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            archived = conn.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver").fetchone()
            if archived[0] and archived[0] >= segment:
                break
            time.sleep(0.5)
    assert archived[0] and archived[0] >= segment and archived[1] == 0, archived
    listing = docker(
        "run",
        "--rm",
        "-v",
        f"{project.name}-wal-archive:/w:ro",
        "--entrypoint",
        "ls",
        project.env["LLMOBS_IMAGE_APP"],
        "/w",
    ).stdout.split()
    assert segment in listing


def test_backups_run_in_one_off_containers_into_the_backup_volume(project: Project):
    """`llmobs backup create` on the host delegates to a job container of the app image, which
    reaches PostgreSQL on the stack's network and writes into the backup-data volume; list and
    verify run there too, and `status` shows the newest backup's age."""
    ids = []
    for kind in ("physical", "logical"):
        created = project.cli("backup", "create", "--type", kind)
        found = re.findall(r"\b(\d{8}T\d{6}\S*)", created.stdout)
        assert found, created.stdout + created.stderr
        assert "pg_basebackup" in created.stderr or "pg_dump" in created.stderr  # the job's progress reaches us
        ids.append(found[-1])
    listing = docker(
        "run",
        "--rm",
        "-v",
        f"{project.name}-backup-data:/b:ro",
        "--entrypoint",
        "ls",
        project.env["LLMOBS_IMAGE_APP"],
        "/b",
    ).stdout.split()
    assert set(ids) <= set(listing), (ids, listing)
    listed = json.loads(project.cli("backup", "list", "--json").stdout)
    assert [b["id"] for b in listed["backups"]] == ids
    verified = project.cli("backup", "verify", ids[0], check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "pg_verifybackup" in verified.stdout and "wal continuity" in verified.stdout
    _, status = project.status()
    backup = status["facts"]["backup"]
    assert backup["available"] and backup["newest"]["logical"]["id"] == ids[1], backup
    assert 0 <= backup["age_seconds"] < 600
    (project.root / "logical-backup").write_text(ids[1])


def test_two_backups_at_once_one_exits_already_running(project: Project):
    """The lock lives in the backup volume, which every job container mounts."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "llmobs", "--project-dir", str(project.root), "backup"]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    assert sorted(code for code, _, _ in results) == [0, 3], results
    refused = next(err for code, _, err in results if code == 3)
    assert "another backup operation is running" in refused


def _probe_rows(project: Project, table: str) -> list[int]:
    return [n for (n,) in project.sql(f"SELECT n FROM {table} ORDER BY n")]


def _rows_then_target(project: Project, table: str) -> datetime:
    """Rows 1-3, a physical backup, rows 4-6, the target time T, rows 7-9: `--to T` must give 1-6."""
    project.sql(f"CREATE TABLE {table} (n int)")
    project.sql(f"INSERT INTO {table} SELECT generate_series(1, 3)")
    project.cli("backup", "--type", "physical")
    project.sql(f"INSERT INTO {table} SELECT generate_series(4, 6)")
    target = project.sql("SELECT clock_timestamp()")[0][0]
    time.sleep(0.1)
    project.sql(f"INSERT INTO {table} SELECT generate_series(7, 9)")
    return target


def _all_running_and_healthy(project: Project) -> None:
    code, status = project.status()
    states = {s["name"]: s for s in status["services"]}
    for name in ("timescaledb", "redis", *APP_SERVICES):
        assert states[name]["state"] == "running" and states[name]["health"] == "healthy", states[name]
    assert code == 0, status["warnings"]


def test_point_in_time_restore_runs_in_a_job_and_keeps_the_old_data_aside(project: Project):
    target = _rows_then_target(project, "pitr_probe")
    started = time.monotonic()
    restored = project.cli("restore", "--to", target.isoformat(), "--yes")
    print(f"compose PITR restore: {time.monotonic() - started:.1f} s")
    assert _probe_rows(project, "pitr_probe") == [1, 2, 3, 4, 5, 6], restored.stderr
    assert "Replaying WAL" in restored.stderr and "timeline 2" in restored.stdout
    _all_running_and_healthy(project)
    # The trace sent before the backup is still there, through the restarted services.
    first = (project.root / "first-trace").read_text()
    assert "compose e2e chat" in span_names(read_trace(project, first))
    # The previous data directory is kept aside, beside the live one in the volume.
    kept = json.loads(project.cli("backup", "kept-aside", "--json").stdout)["kept_aside"]
    assert [k["kind"] for k in kept] == ["postgres-data"], kept
    # The restored files belong to the user PostgreSQL runs as.
    server = project.containers("timescaledb")[0]["Id"]
    owner, uid = docker("exec", server, "sh", "-c", 'stat -c %u "$PGDATA"; id -u postgres').stdout.split()
    assert owner == uid


def _restore_interrupted(project: Project, target: datetime, kill_job: bool) -> tuple[int, str]:
    """Start `llmobs restore --to TARGET`; once the restored data directory is in place and
    PostgreSQL starts on it, kill the restore job's container (``kill_job``) or the llmobs
    process itself. Returns its exit code and stderr."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmobs",
            "--project-dir",
            str(project.root),
            "restore",
            "--to",
            target.isoformat(),
            "--yes",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    when = "Starting PostgreSQL"  # the journal says "swapped"; recovery and checks take seconds more
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if when in line:
            break
    assert when in "".join(seen), "".join(seen)
    if kill_job:
        job = _restore_jobs(project)
        assert len(job) == 1, job
        docker("kill", job[0])
    else:
        proc.kill()
    rest = proc.stderr.read()  # not communicate(): it would skip what this file object buffered
    proc.wait(timeout=300)
    return proc.returncode, " ".join(("".join(seen) + rest).split())  # rich wraps long lines


def _restore_jobs(project: Project) -> list[str]:
    return docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project.name}",
        "--filter",
        "label=com.docker.compose.service=restore",
    ).stdout.split()


def test_a_restore_whose_job_dies_midway_leaves_the_old_cluster_running(project: Project):
    target = _rows_then_target(project, "killed_probe")
    code, stderr = _restore_interrupted(project, target, kill_job=True)
    assert code == 1 and "rolled back" in stderr, stderr
    assert _probe_rows(project, "killed_probe") == list(range(1, 10))
    _all_running_and_healthy(project)


def test_an_interrupted_restore_is_undone_by_the_next_up(project: Project):
    target = _rows_then_target(project, "interrupted_probe")
    _restore_interrupted(project, target, kill_job=False)
    deadline = time.monotonic() + 60  # the job notices that its llmobs went away and ends
    while _restore_jobs(project) and time.monotonic() < deadline:
        time.sleep(0.5)
    started = project.cli("up")
    assert "rolled back" in " ".join(started.stderr.split()), started.stderr
    assert _probe_rows(project, "interrupted_probe") == list(range(1, 10))
    _all_running_and_healthy(project)
    kept = json.loads(project.cli("backup", "kept-aside", "--json").stdout)["kept_aside"]
    assert [k["kind"] for k in kept] == ["postgres-data"], kept  # the one from the PITR test only


def test_logical_restore_runs_in_a_job_and_brings_the_data_back(project: Project):
    backup_id = (project.root / "logical-backup").read_text()
    late = send_trace(project, "after the backup")
    read_trace(project, late)
    project.cli("restore", backup_id, "--yes")
    _all_running_and_healthy(project)
    first = (project.root / "first-trace").read_text()
    assert "compose e2e chat" in span_names(read_trace(project, first))
    with project.api() as client:
        assert client.get(f"/api/v1/traces/{late}").status_code == 404
    kept = json.loads(project.cli("backup", "kept-aside", "--json").stdout)["kept_aside"]
    assert sorted(k["kind"] for k in kept) == ["database", "postgres-data"], kept


def test_a_volume_of_the_old_layout_is_moved_into_pgdata(project: Project):
    """Before PGDATA was a subdirectory, the data directory was the volume's root: the
    timescaledb entrypoint moves it in place once, and the data is there."""
    from helpers.compose import ROOT

    volume = f"{project.name}-old-layout"
    image = project.env["LLMOBS_IMAGE_TIMESCALEDB"]
    docker("volume", "create", volume)
    try:
        old = docker(
            "run", "-d", "-e", "POSTGRES_PASSWORD=old-layout", "-v", f"{volume}:/var/lib/postgresql/data", image
        ).stdout.strip()
        _wait_ready(old)
        docker("exec", old, "psql", "-U", "postgres", "-qc", "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        docker("rm", "-f", old)
        wrapper = ROOT / "compose" / "postgres"
        new = docker(
            "run",
            "-d",
            "-e",
            "POSTGRES_PASSWORD=old-layout",
            "-e",
            "PGDATA=/var/lib/postgresql/data/pgdata",
            "-v",
            f"{volume}:/var/lib/postgresql/data",
            "-v",
            f"{wrapper}:/etc/llmobs/postgres:ro",
            "--entrypoint",
            "/bin/sh",
            image,
            "/etc/llmobs/postgres/entrypoint.sh",
            "postgres",
        ).stdout.strip()
        try:
            _wait_ready(new)
            assert docker("exec", new, "psql", "-U", "postgres", "-Atc", "SELECT x FROM kept").stdout.strip() == "42"
            assert docker("exec", new, "ls", "/var/lib/postgresql/data").stdout.split() == ["pgdata"]
            assert "moving the data directory" in docker("logs", new).stderr
        finally:
            docker("rm", "-f", new)
    finally:
        docker("volume", "rm", "-f", volume)


def _wait_ready(container: str) -> None:
    deadline = time.monotonic() + 60
    while docker("exec", container, "pg_isready", "-q", "-h", "127.0.0.1", check=False).returncode != 0:
        assert time.monotonic() < deadline, docker("logs", container).stderr
        time.sleep(0.3)


def upstreams_in_proxy_log(project: Project, since: str, port: int) -> dict[str, int]:
    """Requests per upstream address the proxy logged since ``since`` for one upstream port."""
    logs = docker("logs", "--since", since, project.containers("proxy")[0]["Id"]).stdout
    counts: dict[str, int] = {}
    for address in re.findall(r"upstream=([\d.]+):(\d+)", logs):
        if int(address[1]) == port:
            counts[address[0]] = counts.get(address[0], 0) + 1
    return counts


def replica_addresses(project: Project, service: str) -> set[str]:
    return {net["IPAddress"] for c in project.containers(service) for net in c["NetworkSettings"]["Networks"].values()}


def test_scale_out_spreads_traffic_over_every_replica_then_scale_in(project: Project):
    project.cli("scale", "api=3", "collector=2")
    _, status = project.status()
    states = {s["name"]: s for s in status["services"]}
    assert (states["api"]["replicas"], states["collector"]["replicas"]) == (3, 2), status
    assert states["api"]["health"] == states["collector"]["health"] == "healthy", status
    api_ips, collector_ips = replica_addresses(project, "api"), replica_addresses(project, "collector")
    assert len(api_ips) == 3 and len(collector_ips) == 2

    since = docker(
        "run", "--rm", "--entrypoint", "date", project.env["LLMOBS_IMAGE_APP"], "-u", "+%Y-%m-%dT%H:%M:%SZ"
    ).stdout.strip()
    time.sleep(1)
    with project.api() as client:
        for _ in range(60):
            assert client.get("/health").status_code == 200
    trace_ids = [send_trace(project, f"scaled {i}") for i in range(30)]
    time.sleep(1.5)  # the proxy flushes its access log every second
    api_hits = upstreams_in_proxy_log(project, since, 8080)
    grpc_hits = upstreams_in_proxy_log(project, since, 4317)
    assert set(api_hits) == api_ips, api_hits
    assert set(grpc_hits) == collector_ips, grpc_hits
    print(f"requests per api replica: {sorted(api_hits.values())}, per collector: {sorted(grpc_hits.values())}")
    assert "scaled 29" in span_names(read_trace(project, trace_ids[-1]))

    project.cli("scale", "api=1")
    _, status = project.status()
    states = {s["name"]: s for s in status["services"]}
    assert (states["api"]["replicas"], states["collector"]["replicas"]) == (1, 2), status
    with project.api() as client:
        assert all(client.get("/health").status_code == 200 for _ in range(20))


def test_rolling_restart_replaces_every_replica_while_the_api_keeps_answering(project: Project):
    import threading

    from llmobs.config import Settings
    from llmobs.progress import SilentProgress
    from llmobs.stack.compose import ComposeStack

    before = {c["Id"] for c in project.containers("api")}
    answers: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with project.api() as client:
            while not stop.is_set():
                try:
                    answers.append(client.get("/health").status_code)
                except httpx.HTTPError:
                    answers.append(0)
                time.sleep(0.02)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        ComposeStack(Settings.load(project.root, environ={})).restart(["api"], SilentProgress())
    finally:
        stop.set()
        thread.join()
    after = {c["Id"] for c in project.containers("api")}
    assert len(after) == len(before) and not (after & before)
    failed = [a for a in answers if a != 200]
    print(f"rolling restart: {len(answers)} requests, {len(failed)} failed")
    assert len(answers) > 20 and not failed, failed


def test_down_keeps_the_volumes_and_up_finds_the_data(project: Project):
    project.cli("down")
    assert project.containers() == []
    volumes = project_volumes(project.name)
    assert {f"{project.name}-{v}" for v in ("db-data", "redis-data", "wal-archive")} <= set(volumes)
    code, _ = project.status()
    assert code == 2
    project.cli("up")
    trace_id = (project.root / "first-trace").read_text()
    assert "compose e2e chat" in span_names(read_trace(project, trace_id))


def test_down_volumes_removes_this_projects_data_only(project: Project):
    other = f"{project.name}x-db-data"
    docker("volume", "create", other)
    try:
        project.cli("down", "--volumes", "--yes")
        assert project_volumes(project.name) == []
        assert docker("volume", "inspect", other, check=False).returncode == 0
        assert docker("network", "ls", "-q", "--filter", f"name=^{project.name}-network$").stdout.strip() == ""
    finally:
        docker("volume", "rm", other, check=False)
