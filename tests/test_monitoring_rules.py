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

from conftest import require

REPO = Path(__file__).resolve().parent.parent
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


def test_every_alert_rule_passes_promtool_and_its_unit_test(tmp_path: Path):
    promtool = _tool("promtool")
    shutil.copy(RULES, tmp_path / "alerts.yml")
    shutil.copy(UNIT_TESTS, tmp_path / "alerts_test.yml")
    thresholds = monitoring.thresholds_rules(_settings(tmp_path))
    (tmp_path / "thresholds.yml").write_text(yaml.safe_dump(thresholds))

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
    settings = _settings(tmp_path, MONITORING_SCRAPE_INTERVAL_SECONDS=scrape_seconds)
    layout = LocalLayout(tmp_path)
    run_dir = monitoring.monitoring_dir(layout)
    run_dir.mkdir(parents=True)
    (run_dir / "thresholds.yml").write_text(yaml.safe_dump(monitoring.thresholds_rules(settings)))
    replicas = {"api": [{"replica": 1, "metrics_port": 40001}, {"replica": 2, "metrics_port": 40002}]}
    monitoring.write_app_targets(layout, settings, replicas)
    config = run_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(monitoring.prometheus_config(settings, layout)))

    out = _run([promtool, "check", "config", config])
    api_targets = json.loads(monitoring.targets_path(layout, "api").read_text())
    assert [g["targets"] for g in api_targets] == [["127.0.0.1:40001"], ["127.0.0.1:40002"]]
    assert "SUCCESS: 2 rule files found" in out
    jobs = {c["job_name"] for c in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs == {"api", "collector", "postgres-exporter", "redis-exporter", "alertmanager", "prometheus"}


def test_alertmanager_config_passes_amtool_with_webhook_and_email(tmp_path: Path):
    amtool = _tool("amtool")
    for env in (
        {},
        {"ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"},
        {
            "ALERT_WEBHOOK_URL": "https://hooks.example/T0?token=abc",
            "ALERT_EMAIL_TO": "oncall@example.org",
            "ALERT_SMTP_SMARTHOST": "smtp.example.org:25",
        },
    ):
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(monitoring.alertmanager_config(_settings(tmp_path, **env))))
        out = _run([amtool, "check-config", path])
        assert "SUCCESS" in out
        receiver = yaml.safe_load(path.read_text())["receivers"][0]
        assert bool(receiver.get("webhook_configs")) == bool(env.get("ALERT_WEBHOOK_URL"))
        assert bool(receiver.get("email_configs")) == bool(env.get("ALERT_EMAIL_TO"))
