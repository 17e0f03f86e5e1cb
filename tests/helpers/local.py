"""A local-runtime project as its tests inspect it: `llmobs status --json`, the processes that
belong to it, and its database as the superuser."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import psycopg

from llmobs.config import read_env_file

from helpers.collector import http_export, ids, otlp_request
from helpers.common import run_cli


def status_json(project: Path) -> tuple[int, dict]:
    proc = run_cli("status", "--json", project_dir=project)
    return proc.returncode, json.loads(proc.stdout)


def our_processes(project: Path) -> list[psutil.Process]:
    """Processes whose command line or working directory points into the project."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(project) in cmd or (proc.info["cwd"] or "").startswith(str(project)):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def admin_conn(project: Path) -> psycopg.Connection:
    """The project's database as the superuser (autocommit), over its published port."""
    env = read_env_file(project / ".env")
    return psycopg.connect(
        host="127.0.0.1",
        port=int(env["DB_PORT"]),
        user="postgres",
        password=env["DB_PASSWORD"],
        dbname=env["DB_NAME"],
        autocommit=True,
    )


def export_spans(env: dict[str, str], prefix: int, count: int) -> None:
    """Send ``count`` spans to the collector; each request must be acknowledged."""
    base = f"http://127.0.0.1:{env['COLLECTOR_HTTP_PORT']}"
    for trace_id, span_id in ids(count, prefix):
        body = otlp_request([{"trace_id": trace_id, "span_id": span_id}])
        response = http_export(base, body, env["LLMOBS_INGEST_API_KEY"], timeout=10)
        assert response.status_code == 200, response.text


def stored_spans(env: dict[str, str]) -> tuple[int, int]:
    """(spans stored, distinct span ids) in the project's database."""
    with psycopg.connect(
        host="127.0.0.1", port=int(env["DB_PORT"]), user="postgres", password=env["DB_PASSWORD"], dbname=env["DB_NAME"]
    ) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])
