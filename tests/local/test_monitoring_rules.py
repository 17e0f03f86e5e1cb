"""The monitoring profile's configuration, checked by the real tools: `promtool check config`,
`promtool check rules`, `promtool test rules` (a unit test for every alert rule) and
`amtool check-config`; the alert runbooks exist in docs/alerts.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmobs.config import Settings
from llmobs.resources import resource_dir
from llmobs.stack import monitoring
from llmobs.stack.layout import LocalLayout

from helpers.common import require

REPO = Path(__file__).resolve().parents[2]
RULES = resource_dir("monitoring") / "prometheus" / "alerts.yml"
UNIT_TESTS = Path(__file__).resolve().parent / "monitoring" / "alerts_test.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (Debian: prometheus / prometheus-alertmanager)")
    assert path is not None
    return path


def _run(argv: list[str | Path], cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _settings(project: Path, **env: str) -> Settings:
    return Settings({"BACKUP_MAX_AGE_HOURS": "24", **env}, project)


def _write_config(service: str, settings: Settings, layout: LocalLayout, **env: str) -> Path:
    """Run ``service``'s real entrypoint as the local runtime starts it, with its binary replaced
    by `true`: the configuration it writes (run/monitoring/SERVICE.yml)."""
    spec = monitoring.process_spec(service, settings, layout)
    child_env = {**spec.env, "PROMETHEUS_BIN": "true", "ALERTMANAGER_BIN": "true", **env}
    done = subprocess.run(spec.argv, env=child_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return monitoring.monitoring_dir(layout) / f"{service}.yml"


def test_every_alert_rule_passes_promtool_and_its_unit_test(tmp_path: Path):
    promtool = _tool("promtool")
    _tool("prometheus")
    _write_config("prometheus", _settings(tmp_path), LocalLayout(tmp_path))
    shutil.copy(monitoring.monitoring_dir(LocalLayout(tmp_path)) / "thresholds.yml", tmp_path / "thresholds.yml")
    shutil.copy(RULES, tmp_path / "alerts.yml")
    shutil.copy(UNIT_TESTS, tmp_path / "alerts_test.yml")

    _run([promtool, "check", "rules", tmp_path / "alerts.yml", tmp_path / "thresholds.yml"])
    assert "SUCCESS" in _run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)

    tested = {
        t["alertname"]
        for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert {r["alert"] for r in _alerts()} == tested, "every rule needs a unit test that makes it fire"


def test_every_alert_links_its_runbook_section():
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (REPO / "docs" / "alerts.md").read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in _alerts():
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"docs/alerts.md#{rule['alert'].lower()}"), url
        assert rule["alert"].lower() in headings, f"docs/alerts.md has no section for {rule['alert']}"


@pytest.mark.parametrize("scrape_seconds", ["15", "2"])
def test_local_prometheus_config_passes_promtool(tmp_path: Path, scrape_seconds: str):
    promtool = _tool("promtool")
    _tool("prometheus")
    settings = _settings(tmp_path, MONITORING_SCRAPE_INTERVAL_SECONDS=scrape_seconds)
    layout = LocalLayout(tmp_path)
    replicas = {"api": [{"replica": 1, "metrics_port": 40001}, {"replica": 2, "metrics_port": 40002}]}
    monitoring.write_app_targets(layout, settings, replicas)
    config = _write_config("prometheus", settings, layout)

    out = _run([promtool, "check", "config", config])
    assert "SUCCESS: 2 rule files found" in out
    api_targets = json.loads(monitoring.targets_path(layout, "api").read_text())
    assert [g["targets"] for g in api_targets] == [["127.0.0.1:40001"], ["127.0.0.1:40002"]]
    loaded = yaml.safe_load(config.read_text())
    assert loaded["global"]["scrape_interval"] == f"{scrape_seconds}s"
    jobs = {c["job_name"]: c for c in loaded["scrape_configs"]}
    assert set(jobs) == {"api", "collector", "postgres-exporter", "redis-exporter", "alertmanager", "prometheus"}
    assert jobs["api"]["file_sd_configs"][0]["files"] == [str(monitoring.targets_path(layout, "api"))]
    assert jobs["redis-exporter"]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{settings.get_int('REDIS_EXPORTER_PORT')}"
    ]


def test_compose_prometheus_config_passes_promtool(tmp_path: Path):
    """The compose service's entrypoint with compose's environment: replicas found by Docker DNS."""
    promtool = _tool("promtool")
    entrypoint = resource_dir("monitoring") / "entrypoints" / "prometheus-entrypoint.sh"
    env = {
        "PATH": "/usr/bin:/bin",
        "LLMOBS_MONITORING_DIR": str(resource_dir("monitoring")),
        "LLMOBS_MONITORING_RUN_DIR": str(tmp_path),
        "PROMETHEUS_BIN": "true",
    }
    subprocess.run(["/bin/sh", str(entrypoint)], env=env, check=True, timeout=30)
    out = _run([promtool, "check", "config", tmp_path / "prometheus.yml"])
    assert "SUCCESS: 2 rule files found" in out
    jobs = {c["job_name"]: c for c in yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs["api"]["dns_sd_configs"][0]["names"] == ["api"]
    assert jobs["collector"]["dns_sd_configs"][0]["port"] == 9464
    assert "vector(93600)" in (tmp_path / "thresholds.yml").read_text()  # BACKUP_MAX_AGE_HOURS default: 26


def test_alertmanager_config_passes_amtool_with_webhook_and_email(tmp_path: Path):
    amtool = _tool("amtool")
    _tool("prometheus-alertmanager")
    for env in (
        {},
        {"ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"},
        {
            "ALERT_WEBHOOK_URL": "https://hooks.example/T0?token=abc",
            "ALERT_EMAIL_TO": "oncall@example.org",
            "ALERT_SMTP_SMARTHOST": "smtp.example.org:25",
        },
    ):
        path = _write_config("alertmanager", _settings(tmp_path, **env), LocalLayout(tmp_path))
        out = _run([amtool, "check-config", path])
        assert "SUCCESS" in out
        assert path.stat().st_mode & 0o077 == 0  # the webhook URL may hold a token
        receiver = yaml.safe_load(path.read_text())["receivers"][0]
        assert bool(receiver.get("webhook_configs")) == bool(env.get("ALERT_WEBHOOK_URL"))
        assert bool(receiver.get("email_configs")) == bool(env.get("ALERT_EMAIL_TO"))
