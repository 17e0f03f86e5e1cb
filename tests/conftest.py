"""Fixtures every area uses: real PostgreSQL and redis-server processes started once per session
on free loopback ports, a fresh database per test, collectors as subprocesses, the fake OpenAI
server; and the markers a test gets from the fixtures it uses.

Layout: one folder per area (store, collector, api, backup, secrets, local, compose; unit is the
server-less tier), each with a ``conftest.py`` holding the fixtures only that area uses. Plain
helper functions and classes live in the ``helpers`` package (``tests/helpers``, importable
because ``tests`` is on pytest's ``pythonpath``); nothing imports a ``conftest`` module.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

# Before the helpers are imported: their asserts then explain themselves like a test's do.
pytest.register_assert_rewrite("helpers")

from llmobs.config import Settings, generate_password  # noqa: E402

from helpers.collector import CollectorFactory  # noqa: E402
from helpers.common import (  # noqa: E402
    PgServer,
    RedisInfo,
    free_port,
    make_workdir,
    pg_os_user,
    require,
    settings_env,
)
from helpers.fake_openai import FakeOpenAI  # noqa: E402
from helpers.fake_openai import serve as serve_fake_openai  # noqa: E402
from helpers.markers import apply_markers  # noqa: E402

TEMPLATE_DB = "llmobs_template"


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_workdir("llmobs-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> str:
    """A bootstrapped database (schema, roles, default keys) that per-test databases copy."""
    from llmobs.store.bootstrap import bootstrap

    bootstrap(Settings({**settings_env(pg_server, None, TEMPLATE_DB)}, None))
    return TEMPLATE_DB


def _superuser(pg: PgServer) -> psycopg.Connection:
    return psycopg.connect(
        host=pg.host, port=pg.port, user="postgres", dbname="postgres", password=pg.password, autocommit=True
    )


@pytest.fixture
def db_name(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A fresh database for one test, copied from the template (fast), dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    with _superuser(pg_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield name
    with _superuser(pg_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(pg_server: PgServer, redis_server: RedisInfo, db_name: str) -> Settings:
    """Settings of a project whose database is fresh and bootstrapped, with Redis available."""
    return Settings(settings_env(pg_server, redis_server, db_name), None)


@pytest.fixture
def admin_conn(settings: Settings) -> Iterator[psycopg.Connection]:
    from llmobs.store.db import connect

    with connect(settings, "admin", autocommit=True) as conn:
        yield conn


@pytest.fixture
def start_collector(pg_server, redis_server, db_name, workdir) -> Iterator[CollectorFactory]:
    """Starts collectors (`llmobs serve collector` subprocesses) on the test's database:
    ``start_collector(wait_healthy=True, **settings)``; all are killed when the test ends."""
    factory = CollectorFactory(settings_env(pg_server, redis_server, db_name), workdir)
    yield factory
    factory.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible server on a free loopback port (see tests/helpers/fake_openai.py)."""
    with serve_fake_openai() as fake:
        yield fake


#: Markers a test anywhere gets from the fixtures it uses. An area's conftest adds the markers of
#: its own fixtures (names that mean one thing in that folder only) and of tests that start a
#: stack through the CLI rather than through a fixture.
FIXTURE_MARKERS: dict[str, tuple[str, ...]] = {
    "pg_server": ("postgres",),
    "redis_server": ("redis",),
    "s3_endpoint": ("s3",),
}
TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (helpers.markers)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items, TESTS, fixtures=FIXTURE_MARKERS)
    apply_markers(items, TESTS / "unit", always=("unit",))


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a loadgroup run on a pytest whose node ids xdist cannot tag with the group
    (pytest-dev/pytest-xdist#1386): the groups would be dropped without a word, and docker tests
    spread over two workers fight over the one Docker engine in ways that hide the cause."""
    if getattr(config.option, "dist", None) == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} drops pytest-xdist's groups: install pytest below 9.2 "
            "(scripts/install-deps --test does)"
        )
