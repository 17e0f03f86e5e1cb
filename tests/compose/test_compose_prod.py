"""The production overlay on a real engine: TLS from mounted certificates on PostgreSQL, Redis
and the proxy's api and OTLP ports, restart policies and resource limits."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmobs.config import Settings, update_env_file
from llmobs.progress import SilentProgress
from llmobs.stack.compose import ComposeStack

from helpers.common import require
from helpers.compose import Project, new_project, remove_compose_project, span_names

pytestmark = pytest.mark.slow

PROD_FILES = "docker-compose.yml,docker-compose.prod.yml,docker-compose.offline.yml"


def make_certificates(directory: Path) -> None:
    """A CA and a server certificate for the names and addresses the stack is reached by."""
    require(shutil.which("openssl") is not None, "openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=llmobs test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"
    )
    (directory / "san.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:timescaledb,DNS:redis,DNS:proxy\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )


@pytest.fixture(scope="module")
def prod() -> Iterator[tuple[Project, ComposeStack]]:
    project = new_project()
    make_certificates(project.root / "tls")
    update_env_file(
        project.root / ".env",
        {
            "LLMOBS_COMPOSE_FILES": PROD_FILES,
            "DB_SHARED_BUFFERS": "128MB",
            "DB_EFFECTIVE_CACHE_SIZE": "512MB",
            "DB_MEMORY_LIMIT": "1g",
        },
    )
    stack = ComposeStack(Settings.load(project.root, environ={}))
    try:
        yield project, stack
    finally:
        stack.stop(None)
        stack.remove_data()
        remove_compose_project(project.name)


def test_postgres_and_redis_speak_tls_with_the_mounted_certificates(prod: tuple[Project, ComposeStack]):
    import psycopg
    import redis

    project, stack = prod
    stack.start(["timescaledb", "redis"], SilentProgress())
    env = project.env
    ca = str(project.root / "tls" / "ca.crt")
    with psycopg.connect(
        host="127.0.0.1",
        port=project.port("DB_PORT"),
        user="postgres",
        dbname="postgres",
        password=env["DB_PASSWORD"],
        sslmode="verify-full",
        sslrootcert=ca,
    ) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
        assert conn.execute("SHOW shared_buffers").fetchone()[0] == "128MB"
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "on"
    client = redis.Redis(
        host="127.0.0.1",
        port=project.port("REDIS_TLS_PORT"),
        ssl=True,
        ssl_ca_certs=ca,
        username=env["REDIS_USER"],
        password=env["REDIS_PASSWORD"],
    )
    assert client.ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host="127.0.0.1", port=project.port("REDIS_TLS_PORT"), socket_timeout=3).ping()

    for c in project.containers():
        host = c["HostConfig"]
        assert host["RestartPolicy"]["Name"] == "unless-stopped", c["Name"]
        assert host["Memory"] > 0, c["Name"]


def test_the_proxy_terminates_tls_for_the_api_and_otlp(prod: tuple[Project, ComposeStack]):
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from llmobs.store.bootstrap import bootstrap

    project, stack = prod
    bootstrap(stack.settings)
    stack.start(["api", "collector"], SilentProgress())
    env = project.env
    ca = project.root / "tls" / "ca.crt"
    api = httpx.Client(
        base_url=f"https://localhost:{project.port('API_PORT')}",
        timeout=10,
        verify=ssl.create_default_context(cafile=str(ca)),
        headers={"Authorization": f"Bearer {env['LLMOBS_ADMIN_API_KEY']}"},
    )
    assert api.get("/health").status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{project.port('API_PORT')}/health", timeout=5).raise_for_status()

    exporter = OTLPSpanExporter(
        endpoint=f"localhost:{project.port('COLLECTOR_GRPC_PORT')}",
        credentials=grpc.ssl_channel_credentials(ca.read_bytes()),
        headers={"authorization": f"Bearer {env['LLMOBS_INGEST_API_KEY']}"},
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("prod").start_as_current_span("tls chat") as span:
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    deadline = time.monotonic() + 30
    while (response := api.get(f"/api/v1/traces/{trace_id}")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    assert "tls chat" in span_names(response.json())
