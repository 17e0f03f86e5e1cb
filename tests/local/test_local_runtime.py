"""The local runtime end to end, through the real CLI: init, up, status, logs, scale, down."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from llmobs.config import read_env_file

from helpers.common import run_cli
from helpers.local import admin_conn, our_processes, status_json


def test_up_status_down_and_up_again_keeps_the_data(project: Path):
    proc = run_cli("up", "--runtime", "local", project_dir=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, status = status_json(project)
    assert code == 0, status
    by_name = {s["name"]: s for s in status["services"]}
    for name in ("timescaledb", "redis", "api", "collector"):
        assert by_name[name]["state"] == "running" and by_name[name]["health"] == "healthy", by_name[name]
        assert by_name[name]["pids"] and by_name[name]["latency_ms"] is not None
    assert by_name["timescaledb"]["version"].startswith("PostgreSQL 15")
    assert by_name["grafana"]["state"] == "not available"
    assert status["facts"]["schema_version"] >= 1
    assert status["facts"]["wal_archiver"]["archive_mode"] == "on"
    env = read_env_file(project / ".env")
    for name, value in env.items():
        if "PASSWORD" in name or name.endswith(("_KEY", "SECRET_KEY")):
            assert value not in proc.stdout + proc.stderr, f"{name} leaked into the output of up"

    with admin_conn(project) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('kept-across-restarts')")
    # up again: idempotent, nothing restarted
    pids = {s["name"]: s["pids"] for s in status["services"]}
    assert run_cli("up", project_dir=project).returncode == 0
    _, again = status_json(project)
    assert {s["name"]: s["pids"] for s in again["services"]} == pids

    down = run_cli("down", project_dir=project)
    assert down.returncode == 0, down.stderr
    assert our_processes(project) == []
    assert not list((project / "run").glob("*.pid"))
    assert not (project / "data" / "postgres" / "postmaster.pid").exists()
    code, stopped = status_json(project)
    assert code == 2 and stopped["overall"] == "down"

    assert run_cli("up", project_dir=project).returncode == 0
    with admin_conn(project) as conn:
        assert conn.execute("SELECT count(*) FROM projects WHERE name = 'kept-across-restarts'").fetchone()[0] == 1


def test_status_text_and_logs(project: Path):
    assert run_cli("up", "--runtime", "local", project_dir=project).returncode == 0
    text = run_cli("status", project_dir=project)
    assert text.returncode == 0
    for word in (
        "timescaledb",
        "redis",
        "api",
        "collector",
        "healthy",
        "overall: healthy",
        "WAL archiving: on",
        "database size",
        "web UI: http://127.0.0.1:",
    ):
        assert word in text.stdout
    # `llmobs ui` prints a one-time link that signs a browser in, once.
    link = json.loads(run_cli("ui", "--json", project_dir=project).stdout)
    assert link["login_url"].startswith(link["ui_url"]) and link["role"] == "admin"
    token = link["login_url"].split("#token=", 1)[1]  # in the fragment: never sent to a server
    with httpx.Client(base_url=link["ui_url"].removesuffix("/ui/")) as browser:
        origin = {"Origin": str(browser.base_url).rstrip("/")}
        assert browser.post("/ui/login/link", data={"token": token}, headers=origin).status_code == 303
        assert "project <strong>default</strong>" in browser.get("/ui/").text
        browser.cookies.clear()
        assert browser.post("/ui/login/link", data={"token": token}, headers=origin).status_code == 401
    logs = run_cli("logs", "timescaledb", "-n", "5", project_dir=project)
    assert logs.returncode == 0 and "database system is ready" in logs.stdout
    every = run_cli("logs", "-n", "3", project_dir=project)
    assert "redis " in every.stdout and "timescaledb |" in every.stdout
    bad = run_cli("logs", "nosuch", project_dir=project)
    assert bad.returncode == 2 and "unknown service" in bad.stderr


def test_supervisor_restarts_a_service_that_dies(project: Path):
    assert run_cli("up", "--runtime", "local", project_dir=project).returncode == 0
    _, status = status_json(project)
    api_pid = next(s for s in status["services"] if s["name"] == "api")["pids"][0]
    os.kill(api_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, status = status_json(project)
        api = next(s for s in status["services"] if s["name"] == "api")
        if code == 0 and api["pids"] and api["pids"][0] != api_pid:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"api was not restarted: {api}")
    assert api["health"] == "healthy"


def test_scale_runs_replicas_that_share_the_port(project: Path):
    assert run_cli("up", "--runtime", "local", project_dir=project).returncode == 0
    proc = run_cli("scale", "api=3", "collector=2", project_dir=project)
    assert proc.returncode == 0, proc.stderr
    _, status = status_json(project)
    by_name = {s["name"]: s for s in status["services"]}
    assert len(by_name["api"]["pids"]) == 3 and by_name["api"]["replicas"] == 3
    assert len(by_name["collector"]["pids"]) == 2
    assert by_name["api"]["health"] == "healthy"
    # every replica answers on the one published port (fresh connection per request)
    port = by_name["api"]["ports"]["API_PORT"]
    seen = Counter(
        json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())["instance"]
        for _ in range(90)
    )
    assert {i.rsplit(":", 1)[1] for i in seen} == {str(p) for p in by_name["api"]["pids"]}, seen
    time.sleep(3)  # and they stay up
    _, later = status_json(project)
    assert {s["name"]: s["pids"] for s in later["services"]}["api"] == by_name["api"]["pids"]
    assert run_cli("scale", "api=1", project_dir=project).returncode == 0
    _, status = status_json(project)
    assert len(next(s for s in status["services"] if s["name"] == "api")["pids"]) == 1
    bad = run_cli("scale", "redis=2", project_dir=project)
    assert bad.returncode == 2 and "cannot be scaled" in bad.stderr


def test_port_in_use_is_refused_and_nothing_starts(project: Path):
    env = read_env_file(project / ".env")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["DB_PORT"])))
        blocker.listen()
        proc = run_cli("up", "--runtime", "local", project_dir=project)
    assert proc.returncode == 1
    assert f"port {env['DB_PORT']} (DB_PORT)" in proc.stderr and "already in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert our_processes(project) == []


def test_missing_postgres_binaries_are_named(project: Path):
    proc = run_cli("up", "--runtime", "local", project_dir=project, env={"PG_BIN_DIR": "/nonexistent/bin"})
    assert proc.returncode == 1
    assert "PostgreSQL server binaries" in proc.stderr and "PG_BIN_DIR" in proc.stderr
    assert our_processes(project) == []


def test_data_directory_of_another_major_version_is_left_alone(project: Path):
    pgdata = project / "data" / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("11\n")
    (pgdata / "precious").write_text("do not delete")
    proc = run_cli("up", "--runtime", "local", project_dir=project)
    assert proc.returncode == 1
    assert "PostgreSQL 11" in proc.stderr
    assert (pgdata / "precious").read_text() == "do not delete"
    assert (pgdata / "PG_VERSION").read_text() == "11\n"


def test_down_volumes_asks_first_and_yes_deletes(project: Path):
    assert run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=project).returncode == 0
    refused = run_cli("down", "--volumes", project_dir=project)
    assert refused.returncode == 4 and "--yes" in refused.stderr
    assert (project / "data" / "postgres" / "PG_VERSION").exists()
    answered_no = run_cli("down", "--volumes", project_dir=project, input="n\n")
    assert (project / "data" / "postgres" / "PG_VERSION").exists(), answered_no.stdout
    proc = run_cli("down", "--volumes", "--yes", project_dir=project)
    assert proc.returncode == 0, proc.stderr
    assert not (project / "data").exists()
    assert (project / ".env").exists()
    assert our_processes(project) == []


def test_status_reports_backups_and_turns_degraded_when_wal_archiving_fails(project: Path):
    assert run_cli("up", "--runtime", "local", project_dir=project).returncode == 0
    backup = run_cli("backup", project_dir=project, timeout=300)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    code, status = status_json(project)
    assert code == 0, status["warnings"]
    assert status["facts"]["backup"]["age_seconds"] < 600
    assert "last successful database backup" in run_cli("status", project_dir=project).stdout

    archive = project / "data" / "wal-archive"
    owner = archive.stat()
    if os.geteuid() == 0:
        os.chown(archive, 0, 0)  # PostgreSQL's OS user can no longer write its archive
    archive.chmod(0o500)
    try:
        with admin_conn(project) as conn:
            conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS n")
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, status = status_json(project)
            if code == 1:
                break
            time.sleep(0.5)
        assert code == 1 and status["overall"] == "degraded"
        assert any("WAL archiving is failing" in w for w in status["warnings"])
        assert "WAL archiving is failing" in run_cli("status", project_dir=project).stdout
    finally:
        os.chown(archive, owner.st_uid, owner.st_gid)
        archive.chmod(0o700)
    with admin_conn(project) as conn:  # a new segment wakes the archiver, which then catches up
        conn.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and status_json(project)[0] != 0:
        time.sleep(1)
    assert status_json(project)[0] == 0


def test_the_supervisor_keeps_rollups_fresh(project: Path):
    with (project / ".env").open("a") as fh:
        fh.write("MAINTAIN_INTERVAL_SECONDS=5\n")
    assert run_cli("up", "--runtime", "local", project_dir=project).returncode == 0
    env = read_env_file(project / ".env")
    now = datetime.now(UTC)
    span = {
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "name": "chat gpt-4o",
        "start_time": now.isoformat(),
        "end_time": (now + timedelta(milliseconds=120)).isoformat(),
        "attributes": {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5,
        },
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['API_PORT']}/api/v1/spans",
        data=json.dumps(span).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {env['LLMOBS_INGEST_API_KEY']}", "Content-Type": "application/json"},
    )
    assert urllib.request.urlopen(request, timeout=10).status in (200, 201, 202)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and status_json(project)[1]["facts"].get("spans_last_hour", 0) < 1:
        time.sleep(1)
    assert status_json(project)[1]["facts"]["spans_last_hour"] == 1
