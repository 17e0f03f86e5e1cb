"""The `monitoring` profile in the local runtime, end to end on the real binaries: `llmobs up
--profile monitoring` runs Prometheus, Alertmanager and both exporters under the supervisor;
stopping Redis makes RedisDown reach a webhook receiver; an unwritable WAL archive makes
WalArchivingFailing fire, and it resolves once archiving works again; flooding the collector
past its queue makes CollectorRefusingSpans fire at the webhook after the shipped rule's full
`for`. The servers log JSON (LLMOBS_LOG_FORMAT=json) and `llmobs logs` renders it.

The collector's alert waits out its `for` (2 minutes) while the rest of the test runs: one flood
of refusals keeps its `rate(...[5m]) > 0` true for 5 minutes, so the firing is asserted at the
end, against the time of the flood, and adds no waiting of its own."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmobs.resources import resource_dir
from llmobs.stack.monitoring import BINARIES

from helpers.common import free_ports_env, require, run_cli
from helpers.local import admin_conn, our_processes, status_json

SCRAPE_SECONDS = 1
#: RedisDown's `for` in monitoring/prometheus/alerts.yml
REDIS_DOWN_FOR = 30
#: CollectorRefusingSpans' `for` in monitoring/prometheus/alerts.yml (the shipped value)
COLLECTOR_REFUSING_FOR = 120


class Webhook:
    """A tiny Alertmanager webhook receiver on loopback: keeps every notification."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, name: str, status: str) -> list[dict]:
        return [
            a
            for n in self.notifications
            for a in n["alerts"]
            if a["labels"]["alertname"] == name and a["status"] == status
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def project(workdir: Path, webhook: Webhook) -> Iterator[Path]:
    for binary in BINARIES.values():
        require(shutil.which(binary) is not None, f"{binary} is not installed")
    proj = workdir / "proj"
    assert run_cli("init", str(proj)).returncode == 0
    env = {
        **free_ports_env(),
        "MONITORING_SCRAPE_INTERVAL_SECONDS": str(SCRAPE_SECONDS),
        "ALERT_WEBHOOK_URL": webhook.url,
        "LLMOBS_LOG_FORMAT": "json",
        # A queue of one span: concurrent exports overflow it at once (the flood below).
        "COLLECTOR_QUEUE_MAX_SPANS": "1",
    }
    env_file = proj / ".env"
    env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in env.items()))
    yield proj
    run_cli("down", project_dir=proj, timeout=120)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _query(prometheus: str, expr: str) -> list[dict]:
    """The result vector of the PromQL ``expr`` now."""
    return _get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")["data"]["result"]


def _wait(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _prometheus_alerts(prometheus: str) -> dict[str, str]:
    """alertname → state (pending/firing) of the alerts Prometheus holds."""
    return {a["labels"]["alertname"]: a["state"] for a in _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]}


SERVICE_HEALTH = resource_dir("grafana-provisioning") / "dashboards" / "monitoring" / "service-health.json"
#: Panels that have data on any running stack (others need traffic, backups or failures).
PANELS_WITH_DATA = {
    "Targets up",
    "API requests by status",
    "Collector queue",
    "PostgreSQL and Redis up",
    "Volume usage",
    "WAL archiving failing",
}


def _panels_without_data(prometheus: str) -> list[str]:
    """Asserts every query of the Service health dashboard is valid PromQL for the real
    Prometheus; returns the panels that must show something on a running stack but do not yet."""
    panels = json.loads(SERVICE_HEALTH.read_text())["panels"]
    assert {p["title"] for p in panels} >= PANELS_WITH_DATA
    empty = []
    for panel in panels:
        results = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            answer = _get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
            assert answer["status"] == "success", (panel["title"], expr, answer)
            results += answer["data"]["result"]
        if panel["title"] in PANELS_WITH_DATA and not results:
            empty.append(panel["title"])
    return empty


def _flood_collector(project: Path, env: dict[str, str], seconds: float = 4) -> Counter:
    """Concurrent OTLP/HTTP exports for ``seconds``; the HTTP statuses they got."""
    url = f"http://127.0.0.1:{env['COLLECTOR_HTTP_PORT']}/v1/traces"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {env['LLMOBS_INGEST_API_KEY']}"}
    deadline = time.monotonic() + seconds

    def export(_: int) -> list[int]:
        statuses = []
        while time.monotonic() < deadline:
            now = time.time_ns()
            span = {
                "traceId": secrets.token_hex(16),
                "spanId": secrets.token_hex(8),
                "name": "flood",
                "startTimeUnixNano": str(now - 1_000_000),
                "endTimeUnixNano": str(now),
            }
            body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
            try:
                with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as resp:
                    statuses.append(resp.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        return statuses

    with ThreadPoolExecutor(max_workers=16) as pool:
        return Counter(code for codes in pool.map(export, range(16)) for code in codes)


def _check_json_logs(project: Path) -> None:
    """LLMOBS_LOG_FORMAT=json: the collector's log file holds one JSON object per line, and
    `llmobs logs` shows them as readable lines."""
    raw = [line for line in (project / "logs" / "collector.log").read_text().splitlines() if line.startswith("{")]
    assert raw, "no JSON log lines from the collector"
    entries = [json.loads(line) for line in raw]
    assert all({"time", "level", "service", "pid", "logger", "message"} <= e.keys() for e in entries)
    started = next(e for e in entries if "OTLP/gRPC" in e["message"])
    assert started["service"] == "collector" and started["level"] == "info"
    shown = run_cli("logs", "collector", "-n", "200", project_dir=project).stdout.splitlines()
    assert not [line for line in shown if line.startswith("{")]
    assert any(f"collector[{started['pid']}] INFO" in line and "OTLP/gRPC" in line for line in shown)


@pytest.mark.slow
def test_monitoring_profile_alerts_reach_the_webhook(project: Path, webhook: Webhook):
    up = run_cli("up", "--runtime", "local", "--profile", "monitoring", project_dir=project, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    env = dict(line.split("=", 1) for line in (project / ".env").read_text().splitlines() if "=" in line)
    prometheus = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"

    # Flood the collector past its queue: some exports are refused (429), the collector counts
    # every refused span, and the rule holds the alert pending for its `for`. First of all, so
    # that the `for` passes while the rest of the test runs; the firing is checked at its end.
    # Prometheus has scraped the collector's refusals at 0 before the flood (the collector exports
    # every reason from its start), so the flood's first scrape already shows an increase.
    _wait(
        "the collector's refusals scraped at 0",
        lambda: _query(prometheus, 'llmobs_collector_spans_refused_total{reason="queue_full"} == 0'),
        60,
    )
    flooded_at = time.time()
    statuses = _flood_collector(project, env)
    assert statuses[200] and statuses[429], statuses

    def refused_spans_scraped() -> bool:
        result = _query(prometheus, "sum(llmobs_collector_spans_refused_total)")
        return bool(result) and float(result[0]["value"][1]) == statuses[429] + statuses[503]

    _wait("every refused span counted by the collector's metrics", refused_spans_scraped, 30)
    _wait(
        "CollectorRefusingSpans pending",
        lambda: _prometheus_alerts(prometheus).get("CollectorRefusingSpans") == "pending",
        30,
    )

    code, status = status_json(project)
    by_name = {s["name"]: s for s in status["services"]}
    for name in ("prometheus", "alertmanager", "postgres-exporter", "redis-exporter"):
        assert by_name[name]["state"] == "running" and by_name[name]["health"] == "healthy", by_name[name]
    assert code == 0, status["warnings"]
    assert status["facts"]["alerts"] == []

    # Every target is discovered and answers: each api and collector replica on its own metrics
    # port (the supervisor's file_sd targets), the exporters, Alertmanager and Prometheus itself.
    assert run_cli("scale", "api=2", project_dir=project).returncode == 0

    def all_up() -> Counter | None:
        targets = _get(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        jobs = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
        return jobs if len(targets) == 7 and jobs["api"] == 2 and len(jobs) == 6 else None

    _wait("every target up", all_up, 60)
    _wait(
        "volume usage recorded by the maintenance pass",
        lambda: _query(prometheus, "llmobs_volume_size_bytes"),
        60,
    )
    _wait("data in the Service health panels that always have some", lambda: not _panels_without_data(prometheus), 30)

    # Break two things at once: stop Redis (by the pid it recorded) and make the WAL archive
    # unwritable, then make PostgreSQL archive a segment.
    redis_pid = int((project / "run" / "redis.pid").read_text())
    archive = project / "data" / "wal-archive"
    owner = archive.stat()
    stopped_at = time.monotonic()
    os.kill(redis_pid, signal.SIGTERM)
    if os.geteuid() == 0:
        os.chown(archive, 0, 0)  # PostgreSQL's OS user can no longer write its archive
    archive.chmod(0o500)
    try:
        with admin_conn(project) as conn:
            conn.execute("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS n")
            conn.execute("SELECT pg_switch_wal()")

        # for + two scrape intervals + Alertmanager's group wait (one interval), with room for a
        # loaded machine.
        fired = _wait("RedisDown at the webhook", lambda: webhook.alerts("RedisDown", "firing"), 120)
        elapsed = time.monotonic() - stopped_at
        assert elapsed < REDIS_DOWN_FOR + 3 * SCRAPE_SECONDS + 30, elapsed
        assert fired[0]["labels"]["severity"] == "critical"
        assert fired[0]["annotations"]["runbook_url"].endswith("docs/alerts.md#redisdown")

        code, status = status_json(project)
        assert code == 1 and "RedisDown" in [a["name"] for a in status["facts"]["alerts"]]
        assert "alert RedisDown firing" in run_cli("status", project_dir=project).stdout

        _wait("WalArchivingFailing at the webhook", lambda: webhook.alerts("WalArchivingFailing", "firing"), 150)
    finally:
        os.chown(archive, owner.st_uid, owner.st_gid)
        archive.chmod(0o700)
    with admin_conn(project) as conn:  # a new segment wakes the archiver, which then catches up
        conn.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
        conn.execute("SELECT pg_switch_wal()")
    _wait("WalArchivingFailing resolved", lambda: "WalArchivingFailing" not in _prometheus_alerts(prometheus), 120, 1)

    # Rotating the database and Redis passwords restarts the exporters with the new ones.
    assert run_cli("up", "--profile", "monitoring", project_dir=project, timeout=300).returncode == 0
    exporters = ("postgres-exporter", "redis-exporter")
    pids_before = {s["name"]: s["pids"] for s in status_json(project)[1]["services"] if s["name"] in exporters}
    for target in ("db", "redis"):
        rotated = run_cli("secrets", "rotate", target, "--yes", project_dir=project, timeout=300)
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    rotated_at = time.time()
    pids_after = {s["name"]: s["pids"] for s in status_json(project)[1]["services"] if s["name"] in exporters}
    assert all(pids_after[e] and pids_after[e] != pids_before[e] for e in exporters), (pids_before, pids_after)

    def exporters_connected() -> bool:
        if time.time() < rotated_at + 3:  # a few scrapes of the new processes
            return False
        values = [_query(prometheus, m) for m in ("pg_up", "redis_up")]
        return all(v and v[0]["value"][1] == "1" for v in values)

    _wait("both exporters connected with the rotated passwords", exporters_connected, 60)

    # The flood's alert fired once its `for` had passed, and reached the webhook.
    latest = flooded_at + COLLECTOR_REFUSING_FOR + 3 * SCRAPE_SECONDS + 30
    refusing = _wait(
        "CollectorRefusingSpans at the webhook",
        lambda: webhook.alerts("CollectorRefusingSpans", "firing"),
        max(latest - time.time(), 0) + 30,
    )
    fired_at = datetime.fromisoformat(refusing[0]["startsAt"]).timestamp()
    assert flooded_at + COLLECTOR_REFUSING_FOR - 2 <= fired_at <= latest, (flooded_at, fired_at)
    assert refusing[0]["labels"]["severity"] == "warning"
    assert refusing[0]["annotations"]["runbook_url"].endswith("docs/alerts.md#collectorrefusingspans")

    _check_json_logs(project)
    assert run_cli("down", project_dir=project, timeout=120).returncode == 0
    left = [p for p in our_processes(project) if any(b in " ".join(p.cmdline()) for b in BINARIES.values())]
    assert left == [], left


def test_monitoring_processes_die_with_the_supervisor(project: Path):
    """Like the api and collector, Prometheus, Alertmanager and the exporters are stopped by the
    kernel when the supervisor dies, even by kill -9 (PR_SET_PDEATHSIG before their exec): none is
    left holding its port, and the next `up` starts them again."""
    import psutil

    from llmobs.stack.monitoring import MONITORING_SERVICES

    up = run_cli("up", "--runtime", "local", "--profile", "monitoring", project_dir=project, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    records = json.loads((project / "run" / "children.json").read_text())["services"]
    processes = {name: psutil.Process(records[name][0]["pid"]) for name in MONITORING_SERVICES}
    for name, process in processes.items():  # the binary itself (exec'd), not a wrapper
        command = " ".join(process.cmdline())
        assert BINARIES[name] in command and "llmobs.serving" not in command, (name, command)

    supervisor = json.loads((project / "run" / "supervisor.pid").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    _, alive = psutil.wait_procs(list(processes.values()), timeout=40)
    assert not alive, f"outlived the supervisor: {[p.cmdline()[0] for p in alive]}"

    again = run_cli("up", "--profile", "monitoring", project_dir=project, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    _, status = status_json(project)
    by_name = {s["name"]: s for s in status["services"]}
    for name in MONITORING_SERVICES:
        assert (by_name[name]["state"], by_name[name]["health"]) == ("running", "healthy"), by_name[name]
