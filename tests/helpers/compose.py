"""A real Docker engine and the images of the compose stack, for the tests marked `docker`.

The images come from `scripts/offline-images` (CI runs it before pytest and exports their
names; otherwise the first test that needs them builds them, once per session). Every test
project has its own COMPOSE_PROJECT_NAME and free ports, and removes only its own containers,
network and volumes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import httpx

from llmobs.config import read_env_file, update_env_file

from helpers.common import free_ports_env, make_workdir, require, run_cli

ROOT = Path(__file__).resolve().parents[2]
#: what `eval "$(scripts/offline-images)"` exports
OFFLINE_KEYS = (
    "LLMOBS_IMAGE_TIMESCALEDB",
    "LLMOBS_IMAGE_REDIS",
    "LLMOBS_IMAGE_PROXY",
    "LLMOBS_IMAGE_APP",
    "LLMOBS_IMAGE_PROMETHEUS",
    "LLMOBS_IMAGE_ALERTMANAGER",
    "LLMOBS_IMAGE_POSTGRES_EXPORTER",
    "LLMOBS_IMAGE_REDIS_EXPORTER",
    "LLMOBS_IMAGE_PATRONI",
    "LLMOBS_IMAGE_ETCD",
    "LLMOBS_IMAGE_HAPROXY",
    "LLMOBS_COMPOSE_FILES",
)
TEST_PROJECT_PREFIX = "llmobs-test-"
UP_TIMEOUT = 600


def docker(
    *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        input=input.decode() if input else None,
    )


@cache
def engine_and_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            docker("info", check=False, timeout=20).returncode == 0
            and docker("compose", "version", check=False, timeout=20).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def require_compose() -> None:
    require(engine_and_compose(), "no Docker engine with the compose plugin: run scripts/docker-setup")


def _image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


@cache
def offline_settings() -> dict[str, str]:
    """The LLMOBS_IMAGE_* / LLMOBS_COMPOSE_FILES values of the offline images, built if missing."""
    require_compose()
    values = {k: os.environ[k] for k in OFFLINE_KEYS if os.environ.get(k)}
    images = [v for k, v in values.items() if k.startswith("LLMOBS_IMAGE_")]
    if len(values) == len(OFFLINE_KEYS) and all(_image_exists(i) for i in images):
        return values
    proc = subprocess.run([str(ROOT / "scripts" / "offline-images")], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"scripts/offline-images failed:\n{proc.stderr[-4000:]}"
    found = dict(re.findall(r"^export (\w+)=(\S+)$", proc.stdout, re.MULTILINE))
    return {k: found[k] for k in OFFLINE_KEYS}


def new_project_name() -> str:
    return f"{TEST_PROJECT_PREFIX}{secrets.token_hex(4)}"


def remove_compose_project(name: str) -> None:
    """Remove whatever a test project left on the engine: its containers, network and volumes
    (found by the compose project label and by the project's name prefix, nothing else)."""
    assert name.startswith(TEST_PROJECT_PREFIX)
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    networks = docker("network", "ls", "-q", "--filter", f"name=^{name}-", check=False).stdout.split()
    if networks:
        docker("network", "rm", *networks, check=False)
    volumes = [v for v in docker("volume", "ls", "-q", check=False).stdout.split() if v.startswith(f"{name}-")]
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)


def project_volumes(name: str) -> list[str]:
    return sorted(v for v in docker("volume", "ls", "-q").stdout.split() if v.startswith(f"{name}-"))


class Project:
    """A test's project directory, its compose project name, and ways to drive and inspect it."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name

    @property
    def env(self) -> dict[str, str]:
        return read_env_file(self.root / ".env")

    def port(self, key: str) -> int:
        return int(self.env[key])

    def cli(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True):
        proc = run_cli(*args, project_dir=self.root, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"llmobs {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def status(self) -> tuple[int, dict]:
        proc = self.cli("status", "--json", check=False)
        return proc.returncode, json.loads(proc.stdout)

    def containers(self, service: str | None = None) -> list[dict]:
        filters = ["--filter", f"label=com.docker.compose.project={self.name}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = docker("ps", "-q", *filters).stdout.split()
        return json.loads(docker("inspect", *ids).stdout) if ids else []

    def sql(self, statement: str, params: tuple | None = None) -> list[tuple]:
        """A statement as the superuser over the published PostgreSQL port (autocommit)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port("DB_PORT"),
            user="postgres",
            password=self.env["DB_PASSWORD"],
            dbname=self.env["DB_NAME"],
            autocommit=True,
        ) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port('API_PORT')}",
            timeout=10,
            headers={"Authorization": f"Bearer {self.env['LLMOBS_ADMIN_API_KEY']}"},
        )


def new_project() -> Project:
    """`llmobs init` of a compose project on free ports with its own project name and the offline images."""
    images = offline_settings()
    root = make_workdir("llmobs-compose-") / "proj"
    name = new_project_name()
    assert run_cli("init", str(root)).returncode == 0
    update_env_file(
        root / ".env",
        {
            **free_ports_env(),
            **images,
            "COMPOSE_PROJECT_NAME": name,
            "LLMOBS_RUNTIME": "compose",
            "MAINTAIN_INTERVAL_SECONDS": "5",
        },
    )
    return Project(root, name)


@contextmanager
def stack_up(*up_args: str, env: dict[str, str] | None = None) -> Iterator[Project]:
    """A new project, with ``env`` added to its .env, brought up with `llmobs up UP_ARGS` (a
    module fixture's stack); afterwards `llmobs down --volumes` and whatever of the compose
    project is left is removed."""
    proj = new_project()
    if env:
        update_env_file(proj.root / ".env", env)
    try:
        proj.cli("up", *up_args)
        yield proj
    finally:
        run_cli("down", "--volumes", "--yes", project_dir=proj.root, timeout=300)
        remove_compose_project(proj.name)


def send_trace(project: Project, name: str) -> str:
    """One LLM span through the published OTLP/gRPC port with the OpenTelemetry SDK; its trace id."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(
        endpoint=f"127.0.0.1:{project.port('COLLECTOR_GRPC_PORT')}",
        insecure=True,
        headers={"authorization": f"Bearer {project.env['LLMOBS_INGEST_API_KEY']}"},
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "compose-e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("compose-e2e").start_as_current_span(name) as span:
        span.set_attribute("gen_ai.system", "openai")
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        span.set_attribute("gen_ai.usage.output_tokens", 34)
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


def read_trace(project: Project, trace_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    with project.api() as client:
        while True:
            response = client.get(f"/api/v1/traces/{trace_id}")
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert response.status_code == 200, response.text
    return response.json()


def span_names(trace: dict) -> set[str]:
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("name"), str) and ("span_id" in node or "spanId" in node):
                found.add(node["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(trace)
    return found
