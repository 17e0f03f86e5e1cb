"""`llmobs backup` and `llmobs restore` through the real CLI on a local-runtime project: safe from
cron (minimal environment, a lock, exit codes, JSON events), Redis round trip, the schedule,
and a restore killed midway that `llmobs up` undoes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from llmobs.config import read_env_file
from llmobs.errors import EXIT_ALREADY_RUNNING

from helpers.common import free_ports_env, run_cli

LLMOBS = [sys.executable, "-m", "llmobs"]


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    from helpers.common import make_workdir

    root = make_workdir("llmobs-bkcli-")
    proj = root / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    env_file = proj / ".env"
    env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in free_ports_env().items()))
    proc = run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=proj)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    try:
        yield proj
    finally:
        run_cli("down", project_dir=proj, timeout=120)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _conn(project: Path, dbname: str | None = None) -> psycopg.Connection:
    env = read_env_file(project / ".env")
    return psycopg.connect(
        host="127.0.0.1",
        port=int(env["DB_PORT"]),
        user="postgres",
        password=env["DB_PASSWORD"],
        dbname=dbname or env["DB_NAME"],
        autocommit=True,
    )


def _dump(project: Path) -> str:
    env = read_env_file(project / ".env")
    out = subprocess.run(
        [
            "pg_dump",
            "-h",
            "127.0.0.1",
            "-p",
            env["DB_PORT"],
            "-U",
            "postgres",
            "--exclude-table-data=audit_log",
            "--exclude-table-data=llmobs_backups",
            env["DB_NAME"],
        ],
        env={"PGPASSWORD": env["DB_PASSWORD"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    # sequences aside: `up` bootstraps with upserts, which advance identity sequences
    return "\n".join(
        line
        for line in out.splitlines()
        if "pg_catalog.setval(" not in line and not line.startswith(("\\restrict", "\\unrestrict"))
    )


def _cron(project: Path, *args: str) -> subprocess.Popen[str]:
    """As cron runs it: no TTY, a minimal environment, the project given on the command line."""
    return subprocess.Popen(
        [*LLMOBS, "--project-dir", str(project), *args],
        env={"PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def test_two_backups_from_cron_at_once_one_runs_one_is_refused(project: Path) -> None:
    first, second = _cron(project, "backup", "--json"), _cron(project, "backup", "--json")
    results = sorted((p.wait(120), p.stdout.read(), p.stderr.read()) for p in (first, second))  # type: ignore[union-attr]
    (ok_code, ok_out, ok_err), (busy_code, busy_out, busy_err) = results
    assert ok_code == 0, ok_err
    assert busy_code == EXIT_ALREADY_RUNNING, busy_err
    events = [json.loads(line) for line in ok_out.splitlines()]  # every line is one JSON object
    assert events[-1]["event"] == "backup.created" and events[-1]["type"] == "physical"
    refused = json.loads(busy_out.splitlines()[-1])  # with --json the error is JSON on stdout, not prose
    assert refused["exit_code"] == EXIT_ALREADY_RUNNING and "another backup operation is running" in refused["message"]
    assert "already running" not in ok_err and "another backup operation" not in busy_err
    assert "\x1b[" not in ok_out + ok_err + busy_err  # no colour without a terminal

    with _conn(project) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('written-after-the-backup')")
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while True:  # until the archiver has copied the closed segment
        data = json.loads(run_cli("backup", "list", "--json", project_dir=project).stdout)
        if data["restorable"]["latest"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [b["id"] for b in data["backups"]] == [events[-1]["id"]]
    assert data["backups"][0]["wal_start"]
    assert data["restorable"]["earliest"] < data["restorable"]["latest"]


def test_redis_snapshot_round_trip(project: Path) -> None:
    import redis

    env = read_env_file(project / ".env")
    client = redis.Redis(
        host="127.0.0.1",
        port=int(env["REDIS_PORT"]),
        username=env.get("REDIS_USER", "llmobs"),
        password=env["REDIS_PASSWORD"],
    )
    client.set("kept", "before the backup")
    proc = run_cli("backup", "--type", "redis", project_dir=project)
    assert proc.returncode == 0, proc.stderr
    backup_id = proc.stdout.strip()
    client.set("kept", "changed")
    client.set("new", "after the backup")
    proc = run_cli("restore", backup_id, "--yes", project_dir=project)
    assert proc.returncode == 0, proc.stderr
    client = redis.Redis(
        host="127.0.0.1",
        port=int(env["REDIS_PORT"]),
        username=env.get("REDIS_USER", "llmobs"),
        password=env["REDIS_PASSWORD"],
    )
    assert client.get("kept") == b"before the backup" and client.get("new") is None
    kept = json.loads(run_cli("backup", "kept-aside", "--json", project_dir=project).stdout)["kept_aside"]
    [item] = [k for k in kept if k["kind"] == "redis"]
    assert run_cli("backup", "kept-aside", "remove", item["name"], project_dir=project).returncode == 4
    assert run_cli("backup", "kept-aside", "remove", item["name"], "--yes", project_dir=project).returncode == 0
    assert not Path(item["location"]).exists()


def test_a_grafana_restore_is_refused_where_no_grafana_runs(project: Path, tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "grafana"
    data.mkdir()
    sqlite3.connect(data / "grafana.db").close()
    proc = run_cli("backup", "--type", "grafana", project_dir=project, env={"BACKUP_GRAFANA_DATA_DIR": str(data)})
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("restore", proc.stdout.strip(), "--yes", project_dir=project)
    assert proc.returncode == 2 and "Grafana restores are not available in this runtime" in proc.stderr


def test_restore_refuses_a_time_without_zone_and_asks_for_confirmation(project: Path) -> None:
    proc = run_cli("restore", "--to", "2025-01-01T00:00:00", "--yes", project_dir=project)
    assert proc.returncode == 2 and "no time zone" in proc.stderr
    proc = run_cli("restore", "--to", "2025-01-01T00:00:00Z", project_dir=project)
    assert proc.returncode == 4 and "--yes" in proc.stderr


def test_schedule_runs_jobs_and_stops_on_sigterm(project: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "BACKUP_SCHEDULE_PHYSICAL": "",
        "BACKUP_SCHEDULE_LOGICAL": "*/2 * * * * *",
        "BACKUP_SCHEDULE_REDIS": "",
        "BACKUP_SCHEDULE_VERIFY": "",
        "BACKUP_SCHEDULE_PRUNE": "",
    }
    proc = subprocess.Popen(
        [*LLMOBS, "--project-dir", str(project), "backup", "schedule", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore
    reader.start()
    events = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e["event"] == "job.done" for e in events):
            try:
                events.append(json.loads(lines.get(timeout=1)))
            except queue.Empty:
                continue
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        reader.join(10)
        err = proc.stderr.read()  # type: ignore[union-attr]
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    events += [json.loads(line) for line in rest]
    assert events[0]["event"] == "schedule.start" and list(events[0]["jobs"]) == ["logical"]
    done = [e for e in events if e["event"] == "job.done"]
    assert done and done[0]["job"] == "logical" and done[0]["result"].endswith("-logical"), err
    assert events[-1]["event"] == "schedule.stop" and proc.returncode == 0


def test_restore_killed_midway_is_undone_by_up(project: Path) -> None:
    with _conn(project) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bulk (id int, body text)")
    assert run_cli("backup", project_dir=project).returncode == 0
    with _conn(project) as conn:
        # enough WAL after the backup that replaying it takes a while
        conn.execute("INSERT INTO bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g")
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("INSERT INTO bulk VALUES (-1, 'after the target')")
    before = _dump(project)
    journal = project / "data" / "postgres.restore.json"
    restore = subprocess.Popen(
        [*LLMOBS, "--project-dir", str(project), "restore", "--to", target.isoformat(), "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    phase = None
    while time.monotonic() < deadline and restore.poll() is None:
        try:
            phase = json.loads(journal.read_text())["phase"]
        except (OSError, ValueError):
            phase = None
        if phase == "swapped":
            break
        time.sleep(0.01)
    assert phase == "swapped", restore.communicate()
    os.kill(restore.pid, signal.SIGKILL)
    restore.wait()

    proc = run_cli("up", "--runtime", "local", "timescaledb", "redis", project_dir=project)
    assert "rolled back" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert _dump(project) == before
    assert not journal.exists()
    assert not [p for p in (project / "data").iterdir() if ".restoring-" in p.name or "before-restore" in p.name]


def test_backup_facts_for_status(project: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from llmobs.backup.status import backup_facts
    from llmobs.config import Settings

    settings = Settings.load(project, environ={})
    facts = backup_facts(settings)
    assert facts["available"] and facts["newest"]["physical"]["id"].endswith("-physical")
    assert not facts["too_old"] and not facts["warnings"] and facts["age_seconds"] < 3600
    hours = settings.get_int("BACKUP_MAX_AGE_HOURS") + 1
    later = backup_facts(settings, now=datetime.now(UTC) + timedelta(hours=hours))
    assert later["too_old"] and "h old" in later["warnings"][0]
