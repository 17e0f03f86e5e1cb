"""The stack file `llmobs swarm render` writes, deployed on a single-node swarm of the real
engine: the services converge with host-mode ports and DNS round-robin endpoints, and a trace
goes in through the published collector port and out through the published API port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from helpers.common import require
from helpers.compose import Project, docker, new_project, read_trace, send_trace, span_names

pytestmark = pytest.mark.slow


@pytest.fixture
def swarm() -> Iterator[None]:
    """This engine as a single-node swarm; left again afterwards unless it already was one.

    Leaving a swarm disturbs Docker's DNS for containers that were running meanwhile (names of
    other services stop resolving), so the swarm is only made on an engine running nothing else."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "active":
        running = docker("ps", "-q").stdout.split()
        require(
            not running,
            f"{len(running)} container(s) run on this engine: a swarm init/leave would "
            "disturb their DNS; run this test on an idle engine",
        )
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        if state != "active":
            docker("swarm", "leave", "--force", check=False)
            # Created by `swarm init`; nothing else uses it once the node has left.
            docker("network", "rm", "docker_gwbridge", check=False)


@pytest.fixture
def stack_project(swarm: None) -> Iterator[Project]:
    project = new_project()
    try:
        yield project
    finally:
        docker("stack", "rm", project.name, check=False)
        deadline = time.monotonic() + 60
        label = f"label=com.docker.stack.namespace={project.name}"
        while docker("ps", "-aq", "--filter", label).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.5)
        volumes = [v for v in docker("volume", "ls", "-q").stdout.split() if v.startswith(f"{project.name}-")]
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)


def wait_for(what: str, check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def replicas(project: Project) -> dict[str, str]:
    out = docker(
        "service", "ls", "--filter", f"label=com.docker.stack.namespace={project.name}", "--format", "{{json .}}"
    ).stdout
    return {
        json.loads(line)["Name"].removeprefix(f"{project.name}_"): json.loads(line)["Replicas"]
        for line in out.splitlines()
    }


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_rendered_stack_deploys_on_swarm_and_ingests_a_trace(stack_project: Project):
    project = stack_project
    stack_file = project.root / "stack.yml"
    project.cli("swarm", "render", "api=2", "--output", str(stack_file))
    rendered = yaml.safe_load(stack_file.read_text())
    assert rendered["version"] == "3.8"
    for name, svc in rendered["services"].items():
        assert svc["deploy"]["endpoint_mode"] == "dnsrr", name
        assert all(p["mode"] == "host" for p in svc.get("ports", [])), name
    assert project.env["DB_PASSWORD"] not in stack_file.read_text()

    docker("stack", "deploy", "--resolve-image", "never", "-c", str(stack_file), project.name, timeout=120)
    wait_for(
        "PostgreSQL and Redis",
        lambda: replicas(project).get("timescaledb") == "1/1" and replicas(project).get("redis") == "1/1",
    )
    # Bootstrap from the host through the published port, as `llmobs up` does.
    wait_for("migrations", lambda: project.cli("db", "migrate", check=False).returncode == 0)
    wait_for(
        "api and collector",
        lambda: replicas(project).get("api") == "2/2" and replicas(project).get("collector") == "1/1",
        timeout=180,
    )
    wait_for(
        "the published ports",
        lambda: (
            answers(f"http://127.0.0.1:{project.port('API_PORT')}/health")
            and answers(f"http://127.0.0.1:{project.port('COLLECTOR_METRICS_PORT')}/health")
        ),
    )

    trace_id = send_trace(project, "swarm chat")
    assert "swarm chat" in span_names(read_trace(project, trace_id))
