"""What every test area uses: prerequisites, free ports, work directories, the environment of a
project on the session's PostgreSQL and Redis (``tests/conftest.py``), and the real CLI.

Tests never mock what the stack depends on. When a prerequisite is missing, the test is skipped
on a developer machine but fails under CI (``CI=true``): CI must run everything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmobs.config import SETTINGS, generate_password
from llmobs.proc import OsUser
from llmobs.store.apikeys import generate_api_key

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: the repository's root (the checkout the tests run from)
REPO = Path(__file__).resolve().parents[2]


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a prerequisite of a test is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: every socket stays bound until all are picked, so
    the kernel never hands out one port twice (services on one port are refused at once)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_ports_env() -> dict[str, str]:
    """Every port setting on a free loopback port, so a test stack never collides with another."""
    names = [s.name for s in SETTINGS if s.kind == "port"]
    return {name: str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}


def pg_os_user() -> OsUser | None:
    return OsUser.lookup("postgres") if os.geteuid() == 0 else None


def make_workdir(prefix: str) -> Path:
    """A temporary directory the PostgreSQL OS user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@dataclass
class PgServer:
    host: str
    port: int
    password: str
    app_password: str
    readonly_password: str
    cluster: object


@dataclass
class RedisInfo:
    host: str
    port: int
    user: str
    password: str
    server: object


#: the default keys every test database has (the template database is bootstrapped with them)
TEMPLATE_KEYS = {"admin": generate_api_key().token, "writer": generate_api_key().token}


def settings_env(pg: PgServer, redis: RedisInfo | None, db_name: str, **extra: str) -> dict[str, str]:
    """Environment for a Settings (or a server subprocess) pointing at the session servers."""
    env = {
        "LLMOBS_RUNTIME": "local",
        "DB_HOST": pg.host,
        "DB_PORT": str(pg.port),
        "DB_NAME": db_name,
        "DB_PASSWORD": pg.password,
        "DB_APP_PASSWORD": pg.app_password,
        "DB_READONLY_PASSWORD": pg.readonly_password,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "GRAFANA_ADMIN_PASSWORD": generate_password(),
        "PGADMIN_PASSWORD": generate_password(),
        "LLMOBS_ADMIN_API_KEY": TEMPLATE_KEYS["admin"],
        "LLMOBS_INGEST_API_KEY": TEMPLATE_KEYS["writer"],
        "REDIS_PASSWORD": redis.password if redis else generate_password(),
    }
    if redis:
        env.update(REDIS_HOST=redis.host, REDIS_PORT=str(redis.port), REDIS_USER=redis.user)
    env.update(extra)
    return env


def run_cli(
    *args: str,
    project_dir: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `llmobs` CLI in a subprocess; returns the CompletedProcess (text)."""
    argv = [sys.executable, "-m", "llmobs"]
    if project_dir is not None:
        argv += ["--project-dir", str(project_dir)]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOBS_", "DB_", "REDIS_"))}
    child_env.update(env or {})
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=child_env, cwd=cwd, timeout=timeout, input=input
    )
