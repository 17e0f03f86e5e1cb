"""A local-runtime project as its tests inspect it: `llmobs status --json`, the processes that
belong to it, and its database as the superuser."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import psycopg

from llmobs.config import read_env_file

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
