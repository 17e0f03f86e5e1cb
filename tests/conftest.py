"""Shared fixtures: real PostgreSQL and redis-server processes started on free loopback ports.

Tests never mock what the stack depends on. When a prerequisite is missing, the test is skipped
on a developer machine but fails under CI (``CI=true``): CI must run everything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from fake_openai import serve as serve_fake_openai

from llmobs.config import Settings, generate_password
from llmobs.proc import OsUser

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


def pg_os_user() -> OsUser | None:
    return OsUser.lookup("postgres") if os.geteuid() == 0 else None


def make_workdir(prefix: str) -> Path:
    """A temporary directory the PostgreSQL OS user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_workdir("llmobs-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    from llmobs.stack.postgres import PgCluster, PgConfig

    require(
        shutil.which("pg_ctl") is not None or Path("/usr/lib/postgresql").is_dir(),
        "PostgreSQL server binaries are not installed",
    )
    root = make_workdir("llmobs-pg-")
    cluster = PgCluster(root / "data", log_file=root / "postgres.log", os_user=pg_os_user())
    socket_dir = root / "run"
    cluster.prepare_dirs(socket_dir)
    password = generate_password()
    cluster.init(password)
    port = free_port()
    cluster.write_config(PgConfig("127.0.0.1", port, socket_dir, extra={"fsync": "off", "max_connections": "200"}))
    cluster.start()
    try:
        yield PgServer("127.0.0.1", port, password, generate_password(), generate_password(), cluster)
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisInfo]:
    from llmobs.stack.redis_server import RedisServer

    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    root = make_workdir("llmobs-redis-")
    server = RedisServer(root / "redis.conf", root / "data", root / "redis.pid", root / "redis.log")
    password = generate_password()
    port = free_port()
    server.write_config(bind="127.0.0.1", port=port, user="llmobs", passwords=[password])
    server.start()
    try:
        yield RedisInfo("127.0.0.1", port, "llmobs", password, server)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


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
        "LLMOBS_ADMIN_API_KEY": _TEMPLATE_KEYS["admin"],
        "LLMOBS_INGEST_API_KEY": _TEMPLATE_KEYS["writer"],
        "REDIS_PASSWORD": redis.password if redis else generate_password(),
    }
    if redis:
        env.update(REDIS_HOST=redis.host, REDIS_PORT=str(redis.port), REDIS_USER=redis.user)
    env.update(extra)
    return env


def _make_keys() -> dict[str, str]:
    from llmobs.store.apikeys import generate_api_key

    return {"admin": generate_api_key().token, "writer": generate_api_key().token}


_TEMPLATE_KEYS = _make_keys()
TEMPLATE_DB = "llmobs_template"


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> str:
    """A bootstrapped database (schema, roles, default keys) that per-test databases copy."""
    from llmobs.store.bootstrap import bootstrap

    bootstrap(Settings({**settings_env(pg_server, None, TEMPLATE_DB)}, None))
    return TEMPLATE_DB


@pytest.fixture
def db_name(pg_server: PgServer, template_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test, copied from the template (fast), dropped afterwards."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname="postgres",
        password=pg_server.password,
        autocommit=True,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield name
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname="postgres",
        password=pg_server.password,
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(pg_server: PgServer, redis_server: RedisInfo, db_name: str) -> Settings:
    """Settings of a project whose database is fresh and bootstrapped, with Redis available."""
    return Settings(settings_env(pg_server, redis_server, db_name), None)


@pytest.fixture
def admin_conn(settings: Settings):
    from llmobs.store.db import connect

    with connect(settings, "admin", autocommit=True) as conn:
        yield conn


def run_cli(
    *args: str,
    project_dir: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    input: str | None = None,
):
    """Run the real `llmobs` CLI in a subprocess; returns the CompletedProcess (text)."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "llmobs"]
    if project_dir is not None:
        argv += ["--project-dir", str(project_dir)]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOBS_", "DB_", "REDIS_"))}
    child_env.update(env or {})
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=child_env, cwd=cwd, timeout=timeout, input=input
    )


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
    from llmobs.config import SETTINGS

    names = [s.name for s in SETTINGS if s.kind == "port"]
    return {name: str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible server on a free loopback port (see tests/fake_openai.py)."""
    with serve_fake_openai() as fake:
        yield fake


#: Markers a test gets from the fixtures it uses, directly or through other fixtures, so that
#: tiers select on them (`scripts/test --fast` is ``-m "not docker and not slow"``). Tests that
#: start their own stack through the CLI carry their module's markers (``pytestmark``) instead.
FIXTURE_MARKERS: dict[str, tuple[str, ...]] = {
    "pg_server": ("postgres",),
    "redis_server": ("redis",),
    "s3_endpoint": ("s3",),
    "wheel": ("slow",),
}
UNIT_DIR = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in FIXTURE_MARKERS.get(fixture, ()):
                item.add_marker(marker)
        if UNIT_DIR in item.path.parents:
            item.add_marker("unit")
