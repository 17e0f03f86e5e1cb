"""Recovery drills on the local runtime, against real processes: decoys named by stale pid files,
kill -9 of the supervisor (issue 18; issue 15 point 5)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from llmobs.backup.records import recorded_summary
from llmobs.config import read_env_file

from helpers.collector import http_export, ids, otlp_request
from helpers.common import PgServer, RedisInfo, free_ports_env, run_cli
from helpers.local import export_spans, status_json, stored_spans


@pytest.fixture
def project(workdir: Path) -> Iterator[Path]:
    """A fresh project on free ports; whatever it started is stopped afterwards."""
    proj = workdir / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    env_file = proj / ".env"
    env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in free_ports_env().items()))
    yield proj
    run_cli("down", project_dir=proj, timeout=120)


def services(status: dict) -> dict[str, dict]:
    return {s["name"]: s for s in status["services"]}


def start_decoy(workdir: Path, name: str, cwd: Path) -> subprocess.Popen:
    """A process named like a server (a renamed copy of sleep) working in the server's directory."""
    binary = workdir / "decoys" / name
    binary.parent.mkdir(exist_ok=True)
    shutil.copy("/bin/sleep", binary)
    return subprocess.Popen([str(binary), "600"], cwd=cwd)


def write_postmaster_pid(pgdata: Path, pid: int) -> None:
    """A postmaster.pid as PostgreSQL writes it, naming ``pid`` with that process's start time."""
    started = int(psutil.Process(pid).create_time())
    (pgdata / "postmaster.pid").write_text(f"{pid}\n{pgdata}\n{started}\n5432\n/tmp\n*\n0\nready\n")


def test_stale_pid_files_naming_other_processes_are_never_trusted(
    project: Path, workdir: Path, pg_server: PgServer, redis_server: RedisInfo
) -> None:
    pgdata, redis_data, run_dir = project / "data" / "postgres", project / "data" / "redis", project / "run"
    first = run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert run_cli("down", project_dir=project).returncode == 0
    fake_pg = start_decoy(workdir, "postgres", pgdata)
    fake_redis = start_decoy(workdir, "redis-server", redis_data)
    try:
        # the old checks (a name, a word in the command line) accepted both
        write_postmaster_pid(pgdata, fake_pg.pid)
        (run_dir / "redis.pid").write_text(f"{fake_redis.pid}\n")
        code, status = status_json(project)
        assert code == 2, status
        assert services(status)["timescaledb"]["state"] == "stopped"
        assert services(status)["redis"]["state"] == "stopped"
        down = run_cli("down", project_dir=project)
        assert down.returncode == 0, down.stdout + down.stderr
        assert fake_pg.poll() is None and fake_redis.poll() is None, "down signalled a decoy"

        # a real postmaster and a real redis-server, of other data directories
        real_pg = pg_server.cluster.running_pid()
        real_redis = redis_server.server.running_pid()
        assert real_pg and real_redis
        write_postmaster_pid(pgdata, real_pg)
        (run_dir / "redis.pid").write_text(f"{real_redis}\n")
        down = run_cli("down", project_dir=project)
        assert down.returncode == 0, down.stdout + down.stderr
        assert pg_server.cluster.running_pid() == real_pg and redis_server.server.running_pid() == real_redis

        # `up` starts the project's own servers in spite of the stale pid files, and knows them
        write_postmaster_pid(pgdata, fake_pg.pid)
        (run_dir / "redis.pid").write_text(f"{fake_redis.pid}\n")
        up = run_cli("up", "--runtime", "local", project_dir=project)
        assert up.returncode == 0, up.stdout + up.stderr
        code, status = status_json(project)
        assert code == 0, status
        for name, decoy in (("timescaledb", fake_pg), ("redis", fake_redis)):
            (pid,) = services(status)[name]["pids"]
            assert pid != decoy.pid and "decoys" not in psutil.Process(pid).exe()
        assert run_cli("down", project_dir=project).returncode == 0
        assert fake_pg.poll() is None and fake_redis.poll() is None
    finally:
        for decoy in (fake_pg, fake_redis):
            decoy.kill()
            decoy.wait()


def server_processes(project: Path) -> list[psutil.Process]:
    """The project's `llmobs serve api|collector` processes, whoever their parent is."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(project) in cmd and " serve " in cmd:
            found.append(proc)
    return found


def test_kill_9_of_the_supervisor_leaves_no_orphan_and_up_serves_again(project: Path) -> None:
    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    code, status = status_json(project)
    assert code == 0, status
    for name in ("api", "collector"):  # right after `up`, replicas agree with health
        assert (services(status)[name]["replicas"], services(status)[name]["health"]) == (1, "healthy")
    env = read_env_file(project / ".env")
    export_spans(env, 1, 20)
    children = server_processes(project)
    assert len(children) == 2, children

    supervisor = json.loads((project / "run" / "supervisor.pid").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=40)
    assert not alive, f"children outlived the supervisor: {alive}"

    code, status = status_json(project)
    assert code == 1 and status["overall"] == "degraded", status
    for name in ("api", "collector"):
        assert services(status)[name]["state"] == "stopped"
        assert services(status)[name]["detail"] == "supervisor not running"

    started = time.monotonic()
    again = run_cli("up", project_dir=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - started < 60
    assert len(server_processes(project)) == 2  # one set, not a second one beside orphans
    export_spans(env, 2, 20)
    assert stored_spans(env) == (40, 40)  # every acknowledged span stored once
    assert httpx.get(f"http://127.0.0.1:{env['API_PORT']}/health", timeout=5).status_code == 200

    down = run_cli("down", project_dir=project)
    assert down.returncode == 0, down.stdout + down.stderr
    assert server_processes(project) == []


def test_status_honours_its_probe_timeout_when_redis_hangs(project: Path) -> None:
    up = run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    redis_pid = int((project / "run" / "redis.pid").read_text())
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, status = status_json(project)
        elapsed = time.monotonic() - started
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    assert code == 1, status
    redis = services(status)["redis"]
    assert (redis["state"], redis["health"]) == ("running", "unhealthy") and "Timeout" in redis["detail"], redis
    assert elapsed < 15, f"status took {elapsed:.1f} s with a 2 s probe timeout"  # 27 s with client retries
    assert services(status)["timescaledb"]["health"] == "healthy"


def test_failed_and_damaged_backups_are_listed_fail_verify_and_degrade_status(project: Path) -> None:
    """Issue 18 items 6 and 7, issue 15 point 6: a failed attempt leaves a record (type, step,
    error, time); a backup that needs WAL the archive did not get exits 1, in seconds; a damaged
    manifest is listed as damaged and fails `verify --all`; both make `status` degraded."""
    up = run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    logical = run_cli("backup", "--type", "logical", project_dir=project)
    assert logical.returncode == 0, logical.stdout + logical.stderr
    logical_id = logical.stdout.strip()

    archive = project / "data" / "wal-archive"
    owner = archive.stat()
    os.chown(archive, 0, 0)  # PostgreSQL's OS user can no longer write its archive
    archive.chmod(0o500)
    try:
        started = time.monotonic()
        physical = run_cli("backup", "--json", project_dir=project)
        elapsed = time.monotonic() - started
    finally:
        os.chown(archive, owner.st_uid, owner.st_gid)
        archive.chmod(0o700)
    assert physical.returncode == 1, physical.stdout + physical.stderr
    assert elapsed < 90, f"{elapsed:.0f} s"  # 121 s of waiting before, and exit 0
    events = [json.loads(line) for line in physical.stdout.splitlines()]
    assert events[-1]["event"] == "error" and "did not reach the WAL archive" in events[-1]["message"]

    listing = json.loads(run_cli("backup", "list", "--json", project_dir=project).stdout)
    (attempt,) = listing["failed_attempts"]
    assert attempt["type"] == "physical" and attempt["step"] == "Checking that the WAL archive holds the backup's WAL"
    assert "did not reach the WAL archive" in attempt["error"] and attempt["at"]
    code, status = status_json(project)
    assert code == 1 and any(f"backup {attempt['id']} failed" in w for w in status["warnings"]), status["warnings"]
    env = read_env_file(project / ".env")
    with psycopg.connect(
        host="127.0.0.1", port=int(env["DB_PORT"]), user="postgres", password=env["DB_PASSWORD"], dbname=env["DB_NAME"]
    ) as conn:  # what the compose runtime's `status` reads
        (recorded,) = recorded_summary(conn)["failed_attempts"]
    assert (recorded.id, recorded.step, recorded.error) == (attempt["id"], attempt["step"], attempt["error"])

    (project / "backups" / logical_id / "manifest.json").write_text('{"id": "truncat')
    listing = json.loads(run_cli("backup", "list", "--json", project_dir=project).stdout)
    assert [d["id"] for d in listing["damaged"]] == [logical_id]
    assert logical_id not in [b["id"] for b in listing["backups"]]
    text = run_cli("backup", "list", project_dir=project).stdout
    assert f"DAMAGED {logical_id}" in text and f"FAILED {attempt['id']}" in text
    verify = run_cli("backup", "verify", "--all", project_dir=project)
    assert verify.returncode == 1 and f"{logical_id} (logical, local): FAILED" in verify.stdout, verify.stdout
    code, status = status_json(project)
    assert code == 1 and any(f"backup {logical_id} is damaged" in w for w in status["warnings"]), status["warnings"]


def test_restore_exits_0_only_once_every_service_serves_again(project: Path) -> None:
    """Issue 18 item 5: right after `restore` exits 0, `status` is healthy, as after `up`."""
    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env_file(project / ".env")
    export_spans(env, 3, 10)
    backup = run_cli("backup", project_dir=project)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    export_spans(env, 4, 10)  # after the backup: gone once it is restored
    restore = run_cli("restore", backup.stdout.strip(), "--yes", project_dir=project)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    code, status = status_json(project)
    assert code == 0, [(s["name"], s["state"], s["health"], s["detail"]) for s in status["services"]]
    assert stored_spans(env) == (10, 10)
    export_spans(env, 5, 10)  # the collector serves at once, on the restored database
    assert stored_spans(env) == (20, 20)
    # item 9: the new timeline's WAL is not archived yet, but the restorable window already
    # reaches now (what the live server has not archived yet, a point-in-time restore archives)
    listing = json.loads(run_cli("backup", "list", "--json", project_dir=project).stdout)
    assert listing["timeline"] == 2 and listing["restorable"]["latest"], listing


def _timed_export(env: dict[str, str], key: str, prefix: int) -> tuple[int, float, httpx.Response]:
    base = f"http://127.0.0.1:{env['COLLECTOR_HTTP_PORT']}"
    trace_id, span_id = ids(1, prefix)[0]
    started = time.monotonic()
    response = http_export(base, otlp_request([{"trace_id": trace_id, "span_id": span_id}]), key, timeout=30)
    return response.status_code, time.monotonic() - started, response


def test_ingest_refuses_fast_while_the_database_is_down_and_resumes_at_once(project: Path) -> None:
    """Issue 18 item 4: UNAVAILABLE at once while PostgreSQL is down (also for a key the
    collector has not looked up yet), accepted again within seconds of PostgreSQL accepting
    connections, and the api serves on new connections; 0 acknowledged spans lost."""
    from llmobs.config import Settings
    from llmobs.stack.local import LocalStack

    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env_file(project / ".env")
    export_spans(env, 6, 10)
    api = f"http://127.0.0.1:{env['API_PORT']}/api/v1/traces"
    admin = {"Authorization": f"Bearer {env['LLMOBS_ADMIN_API_KEY']}"}
    assert httpx.get(api, headers=admin, timeout=10).status_code == 200
    cluster = LocalStack(Settings.load(project, environ={})).cluster

    cluster.stop(mode="fast")
    for prefix, key in ((7, env["LLMOBS_INGEST_API_KEY"]), (8, env["LLMOBS_ADMIN_API_KEY"])):  # cached, not cached
        code, elapsed, response = _timed_export(env, key, prefix)
        assert code == 503 and response.headers.get("retry-after"), response.text
        assert elapsed < 1.0, f"refused after {elapsed:.2f} s"  # about 5 s before

    cluster.start()
    back = time.monotonic()
    accepted = 0
    while True:
        code, _, response = _timed_export(env, env["LLMOBS_ADMIN_API_KEY"], 100 + accepted)
        if code == 200:
            accepted += 1
            break
        assert code == 503 and time.monotonic() - back < 10, response.text
        time.sleep(0.1)
    resumed = time.monotonic() - back
    assert resumed < 5, f"ingest accepted again {resumed:.1f} s after PostgreSQL"  # 2-14 s before
    deadline = time.monotonic() + 5
    while (status := httpx.get(api, headers=admin, timeout=10).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200
    assert stored_spans(env) == (10 + accepted, 10 + accepted)


def test_kill_9_of_the_postmaster_then_up_serves_again_without_loss(project: Path) -> None:
    """A postmaster killed with -9 may stay a zombie (an init that does not reap): its socket lock
    file must not stop the next `up`; every acknowledged span survives crash recovery."""
    from llmobs.config import Settings
    from llmobs.stack.local import LocalStack

    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env_file(project / ".env")
    export_spans(env, 9, 10)
    postmaster = LocalStack(Settings.load(project, environ={})).cluster.running_pid()
    assert postmaster is not None
    os.kill(postmaster, signal.SIGKILL)
    # the collector sees the server end its sessions at once, not at its next check a second
    # later: an `up` faster than that would otherwise read a stale "database up"
    killed = time.monotonic()
    health = f"http://127.0.0.1:{env['COLLECTOR_METRICS_PORT']}/health"
    while httpx.get(health, timeout=5).json()["database"] == "up":
        assert time.monotonic() - killed < 0.5, "the collector did not notice the killed postmaster"
        time.sleep(0.02)
    again = run_cli("up", project_dir=project)
    assert again.returncode == 0, again.stdout + again.stderr
    export_spans(env, 10, 10)
    assert stored_spans(env) == (20, 20)


def _collector_record(project: Path) -> dict:
    """The collector's entry in the supervisor's record of its children (run/children.json)."""
    (record,) = json.loads((project / "run" / "children.json").read_text())["services"]["collector"]
    return record


def _restart_delays(project: Path) -> list[str]:
    """The supervisor's announced delays before each collector restart, in order ("0", "1", ...)."""
    text = (project / "logs" / "supervisor.log").read_text()
    return re.findall(r"collector replica 1 exited with code -?\d+ after [\d.]+s; restarting in (\d+)s", text)


def _until_ingest_accepted(env: dict[str, str], prefix: int, timeout: float) -> float:
    """Export one span until the collector acknowledges it; the seconds that took."""
    started = time.monotonic()
    base = f"http://127.0.0.1:{env['COLLECTOR_HTTP_PORT']}"
    trace_id, span_id = ids(1, prefix)[0]
    body = otlp_request([{"trace_id": trace_id, "span_id": span_id}])
    while True:
        try:
            if http_export(base, body, env["LLMOBS_INGEST_API_KEY"], timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        assert time.monotonic() - started < timeout, f"ingest not accepted within {timeout:.0f} s"
        time.sleep(0.1)


def test_restart_back_off_counts_from_readiness_not_spawn(project: Path) -> None:
    """Issue 18 item 10: a collector killed with -9 after it served MIN_UPTIME seconds since it
    reported ready is restarted at once, every time (no growing back-off); one that fails while
    starting is restarted with a growing back-off, and serves again once it can start."""
    from llmobs.stack.supervisor import MAX_BACKOFF, MIN_UPTIME

    up = run_cli("up", "--runtime", "local", project_dir=project)
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env_file(project / ".env")
    health = f"http://127.0.0.1:{env['COLLECTOR_METRICS_PORT']}/health"
    acknowledged = 0
    for kill in (1, 2):
        deadline = time.monotonic() + 10
        while not (record := _collector_record(project))["ready"] and time.monotonic() < deadline:
            time.sleep(0.1)  # the supervisor notes readiness within its 0.2 s loop
        assert record["ready"] and record["pid"], record
        time.sleep(MIN_UPTIME + 1)  # serving since it said it was ready
        export_spans(env, 20 + kill, 5)
        acknowledged += 5
        os.kill(record["pid"], signal.SIGKILL)
        took = _until_ingest_accepted(env, 30 + kill, timeout=60)
        acknowledged += 1
        print(f"kill {kill}: ingest accepted again after {took:.1f} s")
        assert httpx.get(health, timeout=5).status_code == 200
        assert _collector_record(project)["restarts"] == kill
        assert _restart_delays(project) == ["0"] * kill  # restarted at once, the second time too
    assert stored_spans(env) == (acknowledged, acknowledged)

    # A collector that cannot start (a setting only it reads is invalid): restarted after 1, 2,
    # 4 ... s, not in a tight loop; back serving once the setting is fixed.
    env_file = project / ".env"
    good = env_file.read_text()
    env_file.write_text(good + "PII_DETECTORS=no_such_detector\n")
    os.kill(_collector_record(project)["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while len(_restart_delays(project)) < 2 + 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    delays = [int(d) for d in _restart_delays(project)[2:]]
    # killed a moment after it came back (it had not served MIN_UPTIME yet): a crash at start
    # too, then each failed start waits twice as long
    assert delays[:3] == [1, 2, 4], delays
    with pytest.raises(httpx.TransportError):
        httpx.get(health, timeout=5)
    assert "no_such_detector" in (project / "logs" / "collector.log").read_text()
    env_file.write_text(good)
    took = _until_ingest_accepted(env, 40, timeout=MAX_BACKOFF + 60)
    print(f"after the fix: ingest accepted again after {took:.1f} s")
    assert httpx.get(health, timeout=5).status_code == 200
    assert stored_spans(env) == (acknowledged + 1, acknowledged + 1)
