"""The `monitoring` profile in the compose runtime on a real Docker engine (offline images built
from Debian's packages): every api replica is discovered through Docker's DNS, and stopping
Redis makes RedisDown fire in Alertmanager and in `llmobs status`."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from llmobs.config import update_env_file

from helpers.common import run_cli
from helpers.compose import Project, docker, new_project, remove_compose_project

pytestmark = pytest.mark.slow

MONITORING = ("prometheus", "alertmanager", "postgres-exporter", "redis-exporter")


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    proj = new_project()
    update_env_file(proj.root / ".env", {"MONITORING_SCRAPE_INTERVAL_SECONDS": "1"})
    try:
        yield proj
    finally:
        run_cli("down", "--volumes", "--yes", project_dir=proj.root, timeout=300)
        remove_compose_project(proj.name)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _wait(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_monitoring_profile_discovers_replicas_and_alerts(project: Project):
    project.cli("up", "--runtime", "compose", "--profile", "monitoring")
    code, status = project.status()
    states = {s["name"]: s for s in status["services"]}
    for name in MONITORING:
        assert states[name]["state"] == "running" and states[name]["health"] == "healthy", states[name]
    assert status["facts"]["alerts"] == []

    project.cli("scale", "api=2")
    prometheus = f"http://127.0.0.1:{project.port('PROMETHEUS_PORT')}"

    def every_target_up() -> Counter | None:
        targets = _get(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        jobs = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
        return jobs if len(targets) == 7 and jobs["api"] == 2 and len(jobs) == 6 else None

    _wait("both api replicas, the collector, exporters, Alertmanager and Prometheus up", every_target_up, 90)

    (redis,) = project.containers("redis")
    docker("stop", redis["Id"])
    alertmanager = f"http://127.0.0.1:{project.port('ALERTMANAGER_PORT')}"
    _wait(
        "RedisDown in Alertmanager",
        lambda: [a for a in _get(f"{alertmanager}/api/v2/alerts") if a["labels"]["alertname"] == "RedisDown"],
        120,
    )
    code, status = project.status()
    assert code == 1 and "RedisDown" in [a["name"] for a in status["facts"]["alerts"]]
